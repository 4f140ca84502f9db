"""One shard = one commit: idempotent re-commits, crashes mid-shard, concurrent writer processes (real ones)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from attn_audit.storage.store import Store
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[2]
N, SHARD = 24, 2  # 12 shards of 2 samples; 2 methods → 4 maps per shard

WORKER = r"""
import json, os, sys, time
import numpy as np
from types import SimpleNamespace
from attn_audit.storage import tables
from attn_audit.storage.store import RunSpec, Store

root, seed, shards, mode = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
N, SHARD = int(sys.argv[5]), int(sys.argv[6])
store = Store.open(root, create=True)
run = store.begin_run(RunSpec("builtin:tiny", "m" * 64, "builtin:fake", seed * 64, ("chefer2021", "rollout"),
                              {"target": "predicted"}, num_samples=N, shard_size=SHARD))
print(run.run_id, flush=True)

def rows(shard):
    lo, hi = run.shard_range(shard)
    exps = [SimpleNamespace(sample_id=f"s{i:03d}", method=m, target=i % 3, target_label=None, score=float(i),
                            probability=0.5, prediction=i % 3, relevance={"image": np.full((2, 2), i, np.float32)},
                            tokens={}, special={}, error=None)
            for i in range(lo, hi) for m in ("chefer2021", "rollout")]
    return dict(explanations=tables.explanation_table(exps, run.run_id),
                predictions=tables.prediction_table(exps, run.run_id))

for shard in shards:
    if mode == "die-mid-shard" and shard == shards[-1]:
        # what a crash between two table commits leaves: this shard's maps and predictions, no marker
        key = f"{run.run_id}:shard:{shard}"
        for name, table in rows(shard).items():
            store._append_once(name, store._conform(name, table, run.run_id, shard, "float32"), key)
        os._exit(3)
    store.commit_shard(run.run_id, shard, **rows(shard))
    print("committed", shard, flush=True)
"""


def worker(root, seed, shards, mode="normal") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(root), seed, json.dumps(list(shards)), mode, str(N),
                             str(SHARD)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, expected_rc=0) -> str:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == expected_rc, err
    return out.split()[0]


def assert_complete(store: Store, run_id: str, shards) -> None:
    """Every listed shard fully visible exactly once; nothing else visible."""
    maps = store.explanations(run_id=run_id).to_pylist()
    keys = [(m["sample_id"], m["method"]) for m in maps]
    assert len(keys) == len(set(keys)), "duplicate maps"
    assert sorted({m["shard_id"] for m in maps}) == sorted(shards)
    assert len(maps) == 4 * len(shards)
    assert all(m["relevance"] == [float(m["sample_id"][1:])] * 4 for m in maps)
    assert store.predictions(run_id=run_id).num_rows == 2 * len(shards)
    sql = store.sql(f"SELECT count(*) AS n, count(DISTINCT (sample_id, method)) AS d FROM explanations "
                    f"WHERE run_id = '{run_id}'").to_pylist()
    assert sql == [{"n": 4 * len(shards), "d": 4 * len(shards)}]


def versions(store: Store) -> dict[str, int]:
    return {name: DeltaTable(store.table_uri(name)).version() for name in ("shards", "explanations", "predictions")}


def test_recommitting_a_committed_shard_changes_nothing(tmp_path):
    run_id = finish(worker(tmp_path / "s", "a", [0, 1]))
    store = Store.open(tmp_path / "s")
    before = versions(store)
    run_id2 = finish(worker(tmp_path / "s", "a", [0, 1]))  # a whole second process re-commits both shards
    assert run_id2 == run_id and versions(store) == before
    assert_complete(store, run_id, [0, 1])


def test_a_writer_dying_mid_shard_leaves_nothing_visible_and_a_rerun_completes_it(tmp_path):
    run_id = finish(worker(tmp_path / "s", "a", [0, 1], mode="die-mid-shard"), expected_rc=3)
    store = Store.open(tmp_path / "s")
    raw = DeltaTable(store.table_uri("explanations")).to_pyarrow_table()
    assert raw.num_rows == 8  # shard 1's maps are physically there ...
    assert_complete(store, run_id, [0])  # ... but invisible: its marker never landed
    assert store.run(run_id).samples_done == 2
    store.optimize()  # compaction merges committed and uncommitted rows into one file: still invisible
    assert_complete(store, run_id, [0])
    finish(worker(tmp_path / "s", "a", [0, 1]))  # the rerun skips shard 0 and completes shard 1
    assert_complete(store, run_id, [0, 1])
    assert DeltaTable(store.table_uri("explanations")).to_pyarrow_table().num_rows == 8  # nothing rewritten


@pytest.mark.slow
def test_a_writer_killed_at_any_moment_leaves_only_whole_shards(tmp_path):
    proc = worker(tmp_path / "s", "a", range(N // SHARD))
    run_id = proc.stdout.readline().strip()
    proc.stdout.readline()  # the first shard is in
    time.sleep(0.15)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    store = Store.open(tmp_path / "s")
    done = sorted(store.committed_shards(run_id))
    assert done == list(range(len(done))) and 1 <= len(done) < N // SHARD
    assert_complete(store, run_id, done)
    finish(worker(tmp_path / "s", "a", range(N // SHARD)))
    assert_complete(store, run_id, range(N // SHARD))


def test_concurrent_processes_lose_nothing(tmp_path):
    """Into a store none of them has created yet: two processes split one run's shards, a third writes
    another run, a fourth commits the same shards as the first (every commit of it must be a no-op or a
    completion, never a duplicate)."""
    root = tmp_path / "s"
    shards = range(N // SHARD)
    procs = [worker(root, "a", shards[0::2]), worker(root, "a", shards[1::2]), worker(root, "b", shards),
             worker(root, "a", shards[0::2])]
    ids = [finish(p) for p in procs]
    assert ids[0] == ids[1] == ids[3] != ids[2]
    store = Store.open(root)
    assert_complete(store, ids[0], shards)
    assert_complete(store, ids[2], shards)
    runs = {r["run_id"]: r for r in store.runs().to_pylist()}
    assert len(runs) == 2 and all(r["shards_committed"] == N // SHARD for r in runs.values())
    markers = store.shards().to_pylist()
    assert len(markers) == 2 * (N // SHARD)
    assert len({m["writer"] for m in markers}) >= 2
    assert os.path.isdir(root / "runs" / "_delta_log")
