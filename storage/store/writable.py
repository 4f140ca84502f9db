"""A write probe of a local store, run before any work: a read-only folder, file system or immutable flag is
found in milliseconds instead of as a failed commit in every shard."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from attn_audit.storage.store.errors import StoreLocationError
from attn_audit.storage.store.layout import TABLES


def check_writable(store) -> None:
    """Create and remove a probe file in the store's folder and in each table's data and log folders;
    StoreLocationError naming the folder when that fails. Object stores (s3://, ...) are not probed."""
    if "://" in store.uri:
        return
    root = Path(store.uri)
    folders = [root, *(root / name for name in TABLES), *(root / name / "_delta_log" for name in TABLES)]
    for folder in folders:
        if not folder.is_dir():
            continue
        try:
            handle, probe = tempfile.mkstemp(prefix=".attn-audit-write-probe-", dir=folder)
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            raise StoreLocationError(f"the store {store.uri} is not writable ({folder}: {err.strerror}); give a "
                                     "--store folder you can write to") from None
