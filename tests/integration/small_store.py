"""A small real store for the query, output and path tests: one complete run written through the store's API."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from attn_audit.storage import tables
from attn_audit.storage.store import Store

from tests.integration.test_store import fake_explanations, make_spec


def build_store(path: Path | str, n: int = 6, shard_size: int = 2, edit=None) -> tuple[Store, str]:
    """A store at `path` with a run of `n` samples (image + text maps, chefer2021 and rollout), its last sample
    failed; `edit(explanations)` may change the explanations before they are committed. Returns the store
    and the run id."""
    store = Store.open(path, create=True)
    run = store.begin_run(make_spec(n=n, shard_size=shard_size))
    rng = np.random.default_rng(0)
    for shard in range(run.num_shards):
        lo, hi = run.shard_range(shard)
        ids = [f"s{i:03d}" for i in range(lo, hi) if i != n - 1]
        exps = fake_explanations(ids, run.methods, rng)
        if edit is not None:
            edit(exps)
        failed = [(f"s{n - 1:03d}", "decode", "broken")] if hi == n else []
        store.commit_shard(run.run_id, shard, explanations=tables.explanation_table(exps, run.run_id),
                           predictions=tables.prediction_table(exps, run.run_id),
                           errors=tables.error_table(failed, run.run_id))
    store.finish_run(run.run_id)
    return store, run.run_id


def file_hashes(folder: Path | str) -> dict[str, str]:
    """sha256 of every file under a folder, by relative path."""
    root = Path(folder)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
