#!/usr/bin/env python
"""Lookups by key on a store with many runs: `runs()`, `run(id)`, `run(prefix)` and a resume check.

The store holds --runs runs × --shards committed shards each (default 200 × 50), built as the real commit path
records them but in fewer commits: per run, the `runs` row is appended with the run's transaction and then
rewritten with its final status (what `begin_run` and `finish_run` commit), and the run's shard markers go into
`shards` as one file per shard (the files `commit_shard` writes, with the same statistics) in one commit that
carries every shard's application transaction `attn-audit:<run_id>:shard:<k>`. Delta checkpoints the logs every
100 commits, as it does for a store written shard by shard. The data tables stay empty (no lookup timed here reads
them), and the markers say so (0 explained, failed, maps), so `store.check()` finds the store clean.

Timed (median of --repeat calls, each on a store object opened before, so nothing is cached between tables):
  runs                   store.runs()
  run(id)                store.run(<the id of a run in the middle>)
  run(prefix)            store.run(<a unique 8-character prefix of it>)
  resume check           store.committed_shards(id) and store.is_committed("shards", "<id>:shard:3")
  check(id)              store.check(id): what `attn-audit explain` runs before resuming a run

Examples:
  python bench/bench_store_keys.py                     # 200 runs x 50 shards (~1 min to build)
  python bench/bench_store_keys.py --runs 50 --keep /tmp/store_keys --json out/bench_store_keys.json
  python bench/bench_store_keys.py --smoke             # 6 runs x 4 shards, one repetition (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.transaction import AddAction

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attn_audit.storage.store import TABLES, RunSpec, Store  # noqa: E402
from attn_audit.storage.store.committer import shard_key, transaction  # noqa: E402
from attn_audit.storage.store.provenance import canonical_json, code_version  # noqa: E402

SHARD_SIZE = 1024


def spec(k: int, shards: int) -> RunSpec:
    return RunSpec("bench:synthetic", "0" * 64, f"bench:data{k}", f"{k:064x}", ("chefer2021",), {},
                   num_samples=shards * SHARD_SIZE, shard_size=SHARD_SIZE)


def run_row(spec: RunSpec, status: str, now: datetime) -> pa.Table:
    """The row begin_run writes (status `running`) and finish_run rewrites (its final status)."""
    return pa.Table.from_pylist([{
        "run_id": spec.run_id, "created_at": now, "updated_at": now, "model_ref": spec.model_ref,
        "model_fingerprint": spec.model_fingerprint, "dataset_ref": spec.dataset_ref,
        "dataset_fingerprint": spec.dataset_fingerprint, "methods": list(spec.methods),
        "config": canonical_json(spec.full_config()), "code_version": code_version(), "status": status,
        "num_samples": spec.num_samples, "shard_size": spec.shard_size}], schema=TABLES["runs"].schema)


def marker_file(folder: Path, run_id: str, shard_id: int, now: datetime) -> AddAction:
    """One shard's marker as commit_shard's Delta write leaves it: a zstd Parquet file in the run's partition
    (without the partition column) and its add action with the statistics delta-rs records."""
    marker = {"shard_id": shard_id, "start": shard_id * SHARD_SIZE, "stop": (shard_id + 1) * SHARD_SIZE,
              "samples": SHARD_SIZE, "explained": 0, "failed": 0, "maps": 0,
              "committed_at": now, "writer": f"bench:{os.getpid()}"}
    schema = TABLES["shards"].schema
    table = pa.Table.from_pylist([marker], schema=schema.remove(schema.get_field_index("run_id")))
    relative = f"run_id={run_id}/part-00000-{uuid.uuid4()}-c000.zstd.parquet"
    (folder / relative).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / relative, compression="zstd")
    values = {**marker, "committed_at": now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"}
    stats = {"numRecords": 1, "minValues": values, "maxValues": values, "nullCount": dict.fromkeys(marker, 0)}
    return AddAction(relative, (folder / relative).stat().st_size, {"run_id": run_id},
                     int(now.timestamp() * 1000), True, json.dumps(stats))


def build(folder: Path, runs: int, shards: int) -> list[str]:
    store = Store.open(folder, create=True)
    runs_table, shards_table = DeltaTable(store.table_uri("runs")), DeltaTable(store.table_uri("shards"))
    ids = []
    for k in range(runs):
        s, now = spec(k, shards), datetime.now(timezone.utc)
        ids.append(s.run_id)
        write_deltalake(runs_table, run_row(s, "running", now), mode="append", commit_properties=CommitProperties(
            app_transactions=[transaction(f"{s.run_id}:run")]))
        actions = [marker_file(Path(store.table_uri("shards")), s.run_id, i, now) for i in range(shards)]
        shards_table.create_write_transaction(
            actions, "append", TABLES["shards"].schema, partition_by=["run_id"],
            commit_properties=CommitProperties(app_transactions=[
                transaction(shard_key(s.run_id, i)) for i in range(shards)]))
        write_deltalake(runs_table, run_row(s, "completed", now), mode="overwrite",
                        predicate=f"run_id = '{s.run_id}'")
    return ids


def median_seconds(call, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure(folder: Path, ids: list[str], shards: int, repeat: int) -> dict[str, float]:
    store = Store.open(folder)
    run_id = ids[len(ids) // 2]
    prefix = run_id[:8]
    assert [r for r in ids if r.startswith(prefix)] == [run_id], "the prefix is not unique: use another seed"
    info = store.run(prefix)
    assert info.run_id == run_id and info.shards_committed == shards and info.samples_done == shards * SHARD_SIZE
    assert store.runs().num_rows == len(ids)
    assert store.committed_shards(run_id) == set(range(shards)) and store.is_committed("shards", f"{run_id}:shard:3")

    def resume() -> None:
        store.committed_shards(run_id)
        store.is_committed("shards", f"{run_id}:shard:3")

    return {"runs": median_seconds(store.runs, repeat),
            "run(id)": median_seconds(lambda: store.run(run_id), repeat),
            "run(prefix)": median_seconds(lambda: store.run(prefix), repeat),
            "resume check": median_seconds(resume, repeat),
            "check(id)": median_seconds(lambda: store.check(run_id), repeat)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--shards", type=int, default=50, help="committed shards per run (50)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", help="build the store here and keep it (one already there is reused: give the "
                        "same --shards)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="6 runs x 4 shards, one repetition")
    args = parser.parse_args(argv)
    if args.smoke:
        args.runs, args.shards, args.repeat = 6, 4, 1
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_store_keys_")) / "store"
    try:
        started = time.perf_counter()
        reused = bool(args.keep) and (work / "runs").exists()
        ids = Store.open(work).runs()["run_id"].to_pylist() if reused else build(work, args.runs, args.shards)
        built = time.perf_counter() - started
        seconds = measure(work, ids, args.shards, args.repeat)
    finally:
        if not args.keep:
            shutil.rmtree(work.parent, ignore_errors=True)
    how = f"reused: {work}" if reused else f"built in {built:.1f} s"
    print(f"store of {len(ids)} runs x {args.shards} shards ({how}); median of {args.repeat} calls")
    for name, value in seconds.items():
        print(f"  {name:14s} {value * 1000:9.1f} ms")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"runs": len(ids), "shards": args.shards, "repeat": args.repeat,
                                               "build_s": built, "seconds": seconds}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
