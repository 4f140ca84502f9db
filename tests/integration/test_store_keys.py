"""Lookups by key on real Delta tables: `Store.is_committed` / `committed_keys` follow each transaction key from
its commit to a repair's reset, a run is found and totalled from its own partition and the shards log without
reading other runs' files, and totals from the log's statistics equal those read from the markers' rows."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from attn_audit.storage import tables
from attn_audit.storage.store import Store, StoreDamagedError, StoreError

from tests.integration.test_store import make_spec
from tests.integration.test_store_damage import build, commit_file, resume

TOTALS = ("shards_committed", "samples_done", "explained", "failed", "maps")


def metric_rows(run_id: str) -> pa.Table:
    return pa.Table.from_pylist([{"run_id": run_id, "method": "chefer2021", "metric": "deletion_auc",
                                  "modality": "image", "sample_id": None, "target_index": None, "value": 0.5,
                                  "details": None}], schema=tables.METRICS)


def test_is_committed_follows_each_key_from_its_commit_to_a_reset_and_back(tmp_path):
    store, run, rows = build(tmp_path / "s")
    shard = f"{run.run_id}:shard:1"
    assert store.is_committed("runs", f"{run.run_id}:run")
    assert all(store.is_committed(name, shard) for name in ("explanations", "predictions", "errors", "shards"))
    assert not store.is_committed("shards", f"{run.run_id}:shard:3") and not store.is_committed("metrics", shard)
    keys = [f"{run.run_id}:deletion:shard:{k}" for k in range(3)]
    assert store.append("metrics", metric_rows(run.run_id), key=keys[1])
    assert store.committed_keys("metrics", keys) == {keys[1]}
    with pytest.raises(StoreError, match="no table 'nope'"):
        store.is_committed("nope", shard)

    commit_file(store, "errors", run.run_id, 1).write_bytes(b"")  # shard 1 loses its error row
    assert store.repair().clean
    # the reset records the key at version 0 in every table the shard wrote: not committed, so it is redone
    assert store.committed_keys("shards", [f"{run.run_id}:shard:{k}" for k in range(3)]) == {
        f"{run.run_id}:shard:0", f"{run.run_id}:shard:2"}
    assert not any(store.is_committed(name, shard) for name in ("explanations", "predictions", "shards"))
    assert store.delta("shards").transaction_version(f"attn-audit:{shard}") == 0
    assert resume(store, run, rows) == [1]
    assert store.is_committed("shards", shard) and store.is_committed("errors", shard)


def test_a_run_is_read_from_its_own_partitions_without_other_runs_files(tmp_path):
    store, run, _ = build(tmp_path / "s")
    expected = store.run(run.run_id)
    _, other, _ = build(tmp_path / "s", seed="e")  # a second run in the same store, whose files then go missing
    assert store.run_ids() == {run.run_id, other.run_id} == set(store.runs()["run_id"].to_pylist())
    for name in ("runs", "shards", "predictions", "explanations"):
        for path in Path(store.table_uri(name)).glob(f"run_id={other.run_id}/**/*.parquet"):
            path.unlink()
    assert store.run(run.run_id[:5]) == expected
    assert store.run_ids() == {run.run_id, other.run_id}  # from the log: no data file is read
    assert store.committed_shards(run.run_id) == {0, 1, 2}
    assert store.predictions(run_id=run.run_id).num_rows == expected.explained
    assert len(store.load_explanations(run.run_id)) == expected.explained * len(run.methods)
    with pytest.raises(StoreDamagedError, match="runs: data file"):
        store.run(other.run_id)  # its own row is read, and is gone
    with pytest.raises(StoreDamagedError, match="runs: data file"):
        store.runs()  # the listing reads every run's row


def test_totals_from_the_shards_log_equal_the_markers_rows_with_compacted_files(tmp_path):
    _, run, rows = build(tmp_path / "first")
    store = Store.open(tmp_path / "s", create=True)
    store.begin_run(make_spec())
    for shard in (0, 1):
        store.commit_shard(run.run_id, shard, **rows[shard])
    store.optimize()  # shards 0 and 1 share one marker file now, which the totals must read
    store.commit_shard(run.run_id, 2, **rows[2])  # a one-marker file: its values come from the log
    store.finish_run(run.run_id)
    assert sorted(pa.table(store.delta("shards").get_add_actions(flatten=True))["num_records"].to_pylist()) == [1, 2]

    markers = store.shards(run.run_id).to_pylist()  # the marker rows themselves
    expected = {"shards_committed": len(markers), "samples_done": sum(m["samples"] for m in markers),
                **{key: sum(m[key] for m in markers) for key in ("explained", "failed", "maps")}}
    assert expected == {"shards_committed": 3, "samples_done": 10, "explained": 9, "failed": 1, "maps": 36}
    info = store.run(run.run_id)
    assert {key: getattr(info, key) for key in TOTALS} == expected and info.status == "completed_with_errors"
    (listed,) = store.runs().to_pylist()
    assert {key: listed[key] for key in TOTALS} == expected and listed["num_shards"] == 3
    assert store.committed_shards(run.run_id) == {0, 1, 2}
    assert store.predictions(run_id=run.run_id).num_rows == 9
