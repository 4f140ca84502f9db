"""Store locations: remote URIs, and local ones from what the user typed to the absolute folder path the tables
live under."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

from attn_audit.storage.store.errors import StoreLocationError

# deltalake 1.6 cannot write a table under these (measured over every ASCII character): [ ] ^ | panic while it
# registers the table's object store, a %XX sequence is decoded once too often (the table is looked for
# elsewhere), control characters and backslashes are refused by its path parser.
UNUSABLE = re.compile(r"[\x00-\x1f\x7f\\\[\]^|]|%[0-9A-Fa-f]{2}")


def local_store_path(location: str) -> Path:
    """The absolute, symlink-free folder of a local location (a path, or a file:// URI, percent-decoded);
    StoreLocationError for a path the Delta tables cannot live under."""
    path = Path(unquote(location.removeprefix("file://")) if location.startswith("file://") else location)
    path = path.expanduser().resolve()  # deltalake resolves symlinks too: check what it will see
    bad = sorted({m.group() for m in UNUSABLE.finditer(str(path))})
    if bad:
        shown = ", ".join(repr(b) for b in bad)
        raise StoreLocationError(f"a store cannot live at {str(path)!r}: its path holds {shown}, which deltalake "
                                 "(the Delta Lake library) cannot write under; choose a folder whose path has no "
                                 "[ ] ^ | \\, control characters or %XX sequences")
    return path


def is_remote(uri: str) -> bool:
    """An object-store URI (s3://, gs://, az://, ...); file:// URIs and plain paths are local."""
    return "://" in uri and not uri.startswith("file://")
