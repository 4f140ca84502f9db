"""A damaged store on real Delta tables: `Store.check` finds each kind of damage, reads and resumes refuse it in one
line, and `Store.repair` + a resume bring back every sample exactly once with its original values."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from attn_audit.flows.cli import main
from attn_audit.flows.plan import plan_run
from attn_audit.flows.request import AuditRequest
from attn_audit.storage import tables
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store, StoreDamagedError
from attn_audit.storage.store.layout import ADDED_TABLES
from attn_audit.tasks.explain_shard import explain_shard
from attn_audit.tasks.shards import pending_shards, plan_shards

from attn_audit import models
from tests.integration.test_store import fake_explanations, make_spec

GATED = ("explanations", "predictions", "errors", "shards")


def build(path: Path, seed: str = "d"):
    """A store with one complete run of 10 samples in 3 shards (a failed sample in shard 1); returns the store,
    the run and each shard's committed rows, to commit again as a resume would compute them."""
    store = Store.open(path, create=True)
    run = store.begin_run(make_spec(seed=seed))
    rng = np.random.default_rng(0)
    rows = {}
    for shard in range(run.num_shards):
        lo, hi = run.shard_range(shard)
        failed = [f"s{lo:03d}"] if shard == 1 else []
        exps = fake_explanations([f"s{i:03d}" for i in range(lo + len(failed), hi)], run.methods, rng)
        rows[shard] = {"explanations": tables.explanation_table(exps, run.run_id, shard),
                       "predictions": tables.prediction_table(exps, run.run_id, shard_id=shard),
                       "errors": tables.error_table([(f, "decode", "broken") for f in failed], run.run_id, shard)}
        store.commit_shard(run.run_id, shard, **rows[shard])
    store.finish_run(run.run_id)
    return store, run, rows


def contents(store: Store, run_id: str) -> dict[str, list[dict]]:
    """Every visible row of the run, in a fixed order (values compared exactly)."""
    order = ["sample_id", "target_index", "method", "modality", "stage"]
    out = {}
    for name in GATED:
        table = store.table(name, run_id=run_id)
        out[name] = table.sort_by([(c, "ascending") for c in ["shard_id", *order] if c in table.column_names]
                                  ).drop_columns(["committed_at", "writer"] if name == "shards" else []).to_pylist()
    return out


def resume(store: Store, run, rows) -> list[int]:
    """What `attn-audit explain` does again: commit the shards that are not committed; returns their ids."""
    todo = sorted(set(range(run.num_shards)) - store.committed_shards(run.run_id))
    for shard in todo:
        assert store.commit_shard(run.run_id, shard, **rows[shard])
    store.finish_run(run.run_id)
    return todo


def commit_file(store: Store, table: str, run_id: str, shard: int) -> Path:
    """The log file of the shard's commit to `table`."""
    log = Path(store.table_uri(table)) / "_delta_log"
    txn = f'"attn-audit:{run_id}:shard:{shard}"'
    (found,) = [p for p in sorted(log.glob("*.json")) if txn in p.read_text()]
    return found


def data_files(store: Store, table: str, run_id: str) -> list[Path]:
    return sorted(Path(store.table_uri(table)).glob(f"run_id={run_id}/**/*.parquet"))


def kinds(report) -> set[tuple[str, str]]:
    return {(d.table, d.kind) for d in report.damage}


def assert_one_line(err: StoreDamagedError, *wanted: str) -> None:
    text = str(err)
    assert "\n" not in text and "at ./" not in text, text  # no Rust backtrace
    for word in wanted:
        assert word in text, (word, text)


def test_an_empty_commit_file_is_found_and_only_its_shard_recomputed(tmp_path):
    store, run, rows = build(tmp_path / "s")
    before = contents(store, run.run_id)
    emptied = commit_file(store, "predictions", run.run_id, 1)
    emptied.write_bytes(b"")  # Delta reads it as an empty commit
    store = Store.open(tmp_path / "s")
    assert store.run(run.run_id).explained == 9  # the markers still claim every prediction
    report = store.check(run.run_id)
    assert kinds(report) == {("predictions", "empty_commit"), ("predictions", "row_count")}
    assert report.shards_to_recompute() == {run.run_id: [1]}
    with pytest.raises(StoreDamagedError) as refused:
        report.raise_if_damaged()
    assert_one_line(refused.value, "predictions: commit 2", "is empty", "and 1 more problem",
                    f"attn-audit store check --store {store.uri} --repair")

    repaired = store.repair()
    assert repaired.clean and repaired.repaired
    assert set(json.loads(emptied.read_text())) == {"commitInfo"}  # a valid commit that changes nothing
    assert store.run(run.run_id).status == "running"
    assert store.committed_shards(run.run_id) == {0, 2}
    assert resume(store, run, rows) == [1]
    assert store.check().clean and store.run(run.run_id).status == "completed_with_errors"
    assert contents(store, run.run_id) == before


def test_a_lost_table_log_is_refused_never_created_again_and_rebuilt_by_repair(tmp_path):
    store, run, rows = build(tmp_path / "s")
    before = contents(store, run.run_id)
    shutil.rmtree(Path(store.table_uri("predictions")) / "_delta_log")
    for create in (True, False):  # `explain` opens with create=True: it used to start an empty table
        with pytest.raises(StoreDamagedError) as refused:
            Store.open(tmp_path / "s", create=create)
        assert_one_line(refused.value, "predictions", "missing", "3 data file(s)", "--repair")
    assert not (Path(store.table_uri("predictions")) / "_delta_log").exists()

    damaged = Store.open(tmp_path / "s", strict=False)
    assert kinds(damaged.check()) == {("predictions", "missing_table")}
    assert damaged.repair().clean
    store = Store.open(tmp_path / "s")
    assert resume(store, run, rows) == [0, 1, 2]  # every shard had predictions
    assert contents(store, run.run_id) == before


@pytest.mark.parametrize("name", ADDED_TABLES)
def test_only_tables_added_since_are_created_and_only_into_an_empty_folder(tmp_path, name):
    store, run, _ = build(tmp_path / "s")
    added = Path(store.table_uri(name))
    shutil.rmtree(added)  # a store written before the table existed
    assert Store.open(tmp_path / "s").check().clean and (added / "_delta_log").is_dir()
    shutil.rmtree(added / "_delta_log")
    (added / "run_id=x").mkdir()
    (added / "run_id=x" / "part-0.parquet").write_bytes(b"PAR1")
    with pytest.raises(StoreDamagedError, match=f"{name}: the table is missing"):
        Store.open(tmp_path / "s", create=True)
    assert not (added / "_delta_log").exists()


def test_a_deleted_data_file_fails_reads_in_one_line_and_is_recomputed(tmp_path):
    store, run, rows = build(tmp_path / "s")
    before = contents(store, run.run_id)
    other = store.begin_run(make_spec(seed="e"))  # another run in the same store, not damaged
    store.commit_shard(other.run_id, 0, **rows[0])  # commit_shard sets run_id and shard_id
    data_files(store, "predictions", run.run_id)[0].unlink()
    for read in (lambda: store.predictions(run_id=run.run_id), lambda: store.sql("SELECT count(*) FROM predictions"),
                 lambda: store.load_explanations(run.run_id)):
        with pytest.raises(StoreDamagedError) as refused:
            read()
        assert_one_line(refused.value, "predictions: data file", "is missing", "--repair")
    assert store.runs().num_rows == 2  # the markers still read
    assert store.check(other.run_id).clean and store.predictions(run_id=other.run_id).num_rows == 4

    report = store.check()
    assert kinds(report) == {("predictions", "missing_file"), ("predictions", "row_count")}
    (shard,) = report.shards_to_recompute()[run.run_id]
    assert store.repair(run.run_id).clean
    assert resume(store, run, rows) == [shard]
    assert contents(store, run.run_id) == before and store.check().clean


def test_a_changed_data_file_is_not_guessed_at_but_deleting_it_lets_repair_recompute(tmp_path):
    store, run, rows = build(tmp_path / "s")
    before = contents(store, run.run_id)
    changed = data_files(store, "predictions", run.run_id)[0]
    changed.write_bytes(changed.read_bytes()[:-10])  # cut short: no longer a Parquet file
    with pytest.raises(StoreDamagedError) as refused:
        store.predictions(run_id=run.run_id)
    assert_one_line(refused.value, "predictions: data file", "the log says", "restore it from a backup, or delete it")
    report = store.repair()
    assert ("predictions", "changed_file") in kinds(report) and not report.repaired  # nothing reset meanwhile
    changed.unlink()
    report = store.repair()
    assert report.clean
    assert len(resume(store, run, rows)) == 1
    assert contents(store, run.run_id) == before


def test_a_truncated_newest_commit_is_rolled_back_and_recomputed(tmp_path):
    store, run, rows = build(tmp_path / "s")
    before = contents(store, run.run_id)
    newest = commit_file(store, "predictions", run.run_id, 2)
    newest.write_text(newest.read_text()[:200])
    with pytest.raises(StoreDamagedError) as refused:
        Store.open(tmp_path / "s")
    assert_one_line(refused.value, "predictions: commit 3", "truncated", "--repair")

    repaired = Store.open(tmp_path / "s", strict=False).repair()
    assert repaired.clean, repaired.lines()
    store = Store.open(tmp_path / "s")
    assert resume(store, run, rows) == [2]
    assert contents(store, run.run_id) == before


def test_a_truncated_commit_under_later_ones_is_not_repaired_in_place(tmp_path, capsys):
    store, run, _ = build(tmp_path / "s")
    middle = commit_file(store, "predictions", run.run_id, 1)
    middle.write_text(middle.read_text()[:200])
    damaged = middle.read_bytes()
    with pytest.raises(StoreDamagedError) as refused:
        Store.open(tmp_path / "s")
    assert_one_line(refused.value, "predictions: commit 2", "restore it from a backup")
    assert "--repair" not in str(refused.value)

    assert main(["store", "check", "--store", str(tmp_path / "s"), "--repair"]) == 1
    out = capsys.readouterr().out
    assert "0 of them recoverable" in out and "cannot be repaired: restore it from a backup" in out
    assert middle.read_bytes() == damaged  # left as it was, for a restore


def test_a_lost_marker_file_resets_its_shard(tmp_path):
    store, run, rows = build(tmp_path / "s")
    before = contents(store, run.run_id)
    data_files(store, "shards", run.run_id)[0].unlink()  # one shard's marker
    report = store.check()
    assert kinds(report) == {("shards", "missing_file"), ("shards", "lost_marker"), ("runs", "status")}
    (lost,) = report.shards_to_recompute()[run.run_id]
    assert store.repair().clean
    assert resume(store, run, rows) == [lost]  # its transaction was reset too: the marker is written again
    assert contents(store, run.run_id) == before


def test_compacted_files_are_counted_by_their_rows(tmp_path):
    store, run, rows = build(tmp_path / "s")
    before = contents(store, run.run_id)
    store.optimize()
    store.vacuum(retention_hours=0)
    assert store.check().clean  # files spanning several shards are counted from their shard_id column
    (compacted,) = data_files(store, "predictions", run.run_id)
    compacted.unlink()
    assert store.check().shards_to_recompute() == {run.run_id: [0, 1, 2]}
    assert store.repair().clean
    assert resume(store, run, rows) == [0, 1, 2]
    assert contents(store, run.run_id) == before


def test_store_check_command_and_runs_warning(tmp_path, capsys):
    store, run, _ = build(tmp_path / "s")
    commit_file(store, "errors", run.run_id, 1).write_bytes(b"")
    assert main(["store", "check", "--store", str(tmp_path / "s")]) == 1
    out = capsys.readouterr().out
    assert "damaged, 2 problem(s), 2 of them recoverable with --repair" in out
    assert "errors\n" in out and f"run {run.run_id} shard 1: 0 rows, its marker says 1" in out

    assert main(["runs", "--store", str(tmp_path / "s")]) == 0
    assert "warning: the store" in capsys.readouterr().err

    assert main(["store", "check", "--store", str(tmp_path / "s"), "--run", run.run_id[:6], "--repair"]) == 0
    out = capsys.readouterr().out
    assert "repaired:" in out and "reset 1 shard(s) (1)" in out and "no damage found" in out
    assert main(["store", "check", "--store", str(tmp_path / "s")]) == 0


def test_a_damaged_run_is_not_resumed_until_repaired_then_resumed_with_the_same_values(tmp_path):
    """The real path of `attn-audit explain`: plan_run, then the shard code the actors run."""
    vit = models.load("builtin:fashion-vit", device="cpu")
    request = AuditRequest(model="builtin:fashion-vit", data="builtin:fashion-canvas",
                           methods=["chefer2021", "rollout"], store=str(tmp_path / "s"), limit=12, shard_size=4)

    def explain(plan) -> list[int]:
        store = Store.open(plan.store)
        run = store.begin_run(plan.spec())
        dataset = open_dataset(plan.data_ref)
        todo = pending_shards(plan_shards(run.num_samples, run.shard_size), store.committed_shards(run.run_id))
        for shard in todo:
            explain_shard(vit, dataset, store, run.run_id, shard, plan.methods, batch_size=4)
        store.finish_run(run.run_id)
        return [s.id for s in todo]

    plan = plan_run(request)
    assert explain(plan) == [0, 1, 2]
    store = Store.open(plan.store)
    before = contents(store, plan.run_id)
    commit_file(store, "predictions", plan.run_id, 1).write_bytes(b"")
    with pytest.raises(models.AttnAuditError, match=r"is damaged: predictions: .*--repair"):
        plan_run(request)
    assert Store.open(plan.store, strict=False).repair().clean
    again = plan_run(request)
    assert again.exists and again.run_id == plan.run_id and again.shards_pending == 1
    assert explain(again) == [1]
    store = Store.open(plan.store)
    assert store.check().clean and contents(store, plan.run_id) == before
    ids = store.predictions(run_id=plan.run_id)["sample_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 12  # every sample exactly once
