"""What `plan_run` refuses before Prefect and Ray start: a model folder that is not there, a store that cannot
be written (an immutable folder: even root cannot write into it), `--limit 0`."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from attn_audit.flows.plan import NothingToDo, plan_run
from attn_audit.flows.request import AuditRequest
from attn_audit.storage.store import Store, StoreLocationError, check_writable

from attn_audit import models


def request(tmp_path, **kw) -> AuditRequest:
    return AuditRequest(**{"model": "builtin:fashion-vit", "data": "builtin:fashion-canvas", "methods": ["rollout"],
                           "store": str(tmp_path / "store"), "limit": 4, **kw})


def test_a_missing_model_folder_is_named_at_planning(tmp_path):
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        plan_run(request(tmp_path, model=str(tmp_path / "no-such-checkpoint")))


@pytest.mark.skipif(shutil.which("chattr") is None, reason="needs chattr (e2fsprogs)")
def test_a_store_that_cannot_be_written_is_refused_at_planning(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    check_writable(store)  # a fresh store is writable
    log = tmp_path / "store" / "predictions" / "_delta_log"
    if subprocess.run(["chattr", "+i", str(log)], capture_output=True).returncode:
        pytest.skip("this file system has no immutable flag")
    try:
        with pytest.raises(StoreLocationError, match=r"not writable \(.*predictions/_delta_log"):
            check_writable(store)
        with pytest.raises(models.AttnAuditError, match="not writable.*give a --store folder you can write to"):
            plan_run(request(tmp_path))
    finally:
        subprocess.run(["chattr", "-i", str(log)], check=True)


def test_limit_zero_is_nothing_to_do(tmp_path):
    with pytest.raises(NothingToDo, match="nothing to do"):
        plan_run(request(tmp_path, limit=0))
    assert not (tmp_path / "store").exists()
