"""The explanation store on real Delta tables: round trips, SQL, the read contract and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
from attn_audit.storage import tables
from attn_audit.storage.store import (
    QueryError,
    RunSpec,
    SampleNotFoundError,
    SchemaVersionError,
    Store,
    StoreLocationError,
    UnknownRunError,
)
from deltalake import DeltaTable

ROOT = Path(__file__).resolve().parents[2]
LABELS = ["cat", "dog", "eel"]


def make_spec(n=10, shard_size=4, methods=("chefer2021", "rollout"), seed="d", **kw) -> RunSpec:
    return RunSpec(model_ref="builtin:tiny", model_fingerprint="m" * 64, dataset_ref="builtin:fake",
                   dataset_fingerprint=seed * 64, methods=tuple(methods), config={"target": "predicted"},
                   num_samples=n, shard_size=shard_size, **kw)


def fake_explanations(ids, methods, rng, modalities=("image", "text")):
    """Duck-typed explanations as the engine makes them: an image grid and a token row per sample."""
    out = []
    for sid in ids:
        n_tokens = int(rng.integers(3, 9))
        pred, score, probability = int(rng.integers(0, 3)), float(rng.standard_normal()), float(rng.random())
        for method in methods:
            relevance, tokens, special = {}, {}, {}
            if "image" in modalities:
                relevance["image"] = rng.standard_normal((3, 5)).astype(np.float32)
            if "text" in modalities:
                relevance["text"] = rng.standard_normal(n_tokens).astype(np.float32)
                tokens["text"] = ["[CLS]", *[f"w{j}" for j in range(n_tokens - 2)], "[SEP]"]
                special["text"] = np.array([True] + [False] * (n_tokens - 2) + [True])
            out.append(SimpleNamespace(sample_id=sid, method=method, target=pred, target_label=LABELS[pred],
                                       score=score, probability=probability,
                                       prediction=pred, relevance=relevance, tokens=tokens, special=special,
                                       error=None))
    return out


def commit(store, run, shard, rng, failed=(), methods=None, modalities=("image", "text")):
    lo, hi = run.shard_range(shard)
    ids = [f"s{i:03d}" for i in range(lo, hi) if f"s{i:03d}" not in failed]
    exps = fake_explanations(ids, methods or run.methods, rng, modalities)
    labels = {sid: (LABELS[i % 3], i % 3) for i, sid in enumerate(ids)}  # (name as given, class index)
    store.commit_shard(run.run_id, shard, explanations=tables.explanation_table(exps, run.run_id),
                       predictions=tables.prediction_table(exps, run.run_id, labels),
                       errors=tables.error_table([(f, "decode", "broken") for f in failed], run.run_id))
    return exps


@pytest.fixture
def filled(tmp_path):
    """A store with one complete run of 10 samples in 3 shards (one failed sample) and what went in."""
    store = Store.open(tmp_path / "store", create=True)
    run = store.begin_run(make_spec())
    rng = np.random.default_rng(0)
    written = []
    for shard in range(run.num_shards):
        written += commit(store, run, shard, rng, failed=("s005",) if shard == 1 else ())
    store.finish_run(run.run_id)
    return store, run, written


def test_maps_round_trip_bit_exact_with_shapes_tokens_and_special_flags(filled):
    store, run, written = filled
    back = store.load_explanations(run.run_id)
    assert len(back) == len(written) == 9 * 2
    by_key = {(e.sample_id, e.method): e for e in back}
    for exp in written:
        got = by_key[(exp.sample_id, exp.method)]
        for modality, rel in exp.relevance.items():
            assert got.relevance[modality].dtype == np.float32 and got.relevance[modality].shape == rel.shape
            assert got.relevance[modality].tobytes() == rel.tobytes()  # bit-exact
        assert got.tokens == exp.tokens
        np.testing.assert_array_equal(got.special["text"], exp.special["text"])
        assert (got.target, got.target_label, got.prediction) == (exp.target, exp.target_label, exp.prediction)
        assert np.float32(got.score) == np.float32(exp.score)
    info = store.run(run.run_id)
    assert (info.status, info.shards_committed, info.explained, info.failed, info.maps) == (
        "completed_with_errors", 3, 9, 1, 36)


def test_filters_by_run_prefix_method_sample_and_modality(filled):
    store, run, _ = filled
    t = store.explanations(run_id=run.run_id[:6], method="rollout", sample_ids=["s001", "s009"], modality="image")
    assert t.num_rows == 2 and set(t["method"].to_pylist()) == {"rollout"}
    assert set(t["modality"].to_pylist()) == {"image"} and t.schema == tables.EXPLANATIONS
    only_text = store.load_explanations(run.run_id, modality="text", sample_ids=["s002"])
    assert [set(e.relevance) for e in only_text] == [{"text"}, {"text"}]
    frame = store.frame("predictions", run_id=run.run_id)
    assert len(frame) == 9 and set(frame.columns) >= {"label", "correct", "target_label"}


def test_float16_option_rounds_values_and_keeps_a_float32_column(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    run = store.begin_run(make_spec(n=4, relevance_dtype="float16"))
    assert run.relevance_dtype == "float16" and run.run_id != make_spec(n=4).run_id
    (exp, *_) = commit(store, run, 0, np.random.default_rng(1))
    (got, *_) = store.load_explanations(run.run_id, method=exp.method, sample_ids=[exp.sample_id])
    expected = exp.relevance["image"].astype(np.float16).astype(np.float32)
    assert got.relevance["image"].dtype == np.float32
    np.testing.assert_array_equal(got.relevance["image"], expected)
    store.optimize()  # compaction keeps the values (and the run's own encoding)
    (again, *_) = store.load_explanations(run.run_id, method=exp.method, sample_ids=[exp.sample_id])
    np.testing.assert_array_equal(again.relevance["image"], expected)


def test_duckdb_grouped_query_equals_numpy(filled):
    store, run, written = filled
    sql = """
        SELECT p.label, pos, avg(v) AS mean
        FROM (SELECT run_id, sample_id, target_index, unnest(relevance) AS v, generate_subscripts(relevance, 1) AS pos
              FROM explanations WHERE modality = 'image' AND method = 'chefer2021') e
        JOIN predictions p USING (run_id, sample_id, target_index)
        GROUP BY ALL ORDER BY p.label, pos"""
    got = store.sql(sql).to_pylist()
    preds = {p["sample_id"]: p["label"] for p in store.predictions(run_id=run.run_id).to_pylist()}
    for label in sorted(set(preds.values())):
        maps = np.stack([e.relevance["image"].ravel() for e in written
                         if e.method == "chefer2021" and preds[e.sample_id] == label])
        rows = [r["mean"] for r in got if r["label"] == label]
        np.testing.assert_allclose(rows, maps.astype(np.float64).mean(0), rtol=1e-6, atol=1e-7)
    views = store.sql("SELECT count(*) AS n FROM runs").to_pylist()
    assert views == [{"n": 1}]


def test_tables_are_readable_without_this_package(filled):
    """The contract: deltalake and DuckDB read the store directly; nothing from attn-audit is imported."""
    store, run, _ = filled
    probe = f"""
import json, sys, duckdb
from deltalake import DeltaTable
root = {str(store.uri)!r}
con = duckdb.connect()
for name in ("runs", "shards", "predictions", "explanations", "errors"):
    con.register(name, DeltaTable(f"{{root}}/{{name}}").to_pyarrow_dataset())
out = {{
    "runs": con.execute("SELECT run_id, status, methods FROM runs").fetchall(),
    "maps": con.execute("SELECT count(*) FROM explanations e SEMI JOIN shards s USING (run_id, shard_id)").fetchall(),
    "types": con.execute("SELECT typeof(relevance), typeof(shape), typeof(tokens), typeof(special) "
                         "FROM explanations LIMIT 1").fetchall(),
    "ours": sorted(m for m in sys.modules if m.split('.')[0] in ("attn_audit", "storage", "models", "flows", "tasks")),
}}
print(json.dumps(out, default=str))
con.close()  # else DuckDB's scan threads may abort the interpreter's exit
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd="/")
    out = json.loads(result.stdout)
    assert out["runs"] == [[run.run_id, "completed_with_errors", ["chefer2021", "rollout"]]]
    assert out["maps"] == [[36]]
    assert out["types"] == [["FLOAT[]", "INTEGER[]", "VARCHAR[]", "BOOLEAN[]"]]
    assert out["ours"] == []


def test_query_is_read_only_and_errors_are_clear(filled):
    store, run, _ = filled
    for statement in ("INSERT INTO runs VALUES (1)", "UPDATE runs SET status = 'x'", "DELETE FROM explanations",
                      "CREATE TABLE t AS SELECT 1", f"COPY runs TO '{store.uri}/x.csv'", "ATTACH 'x.db'",
                      "DROP VIEW runs", "INSTALL delta", "SET threads = 1", "CALL pragma_version()"):
        with pytest.raises(QueryError, match="read-only"):
            store.sql(statement)
    with pytest.raises(QueryError, match="syntax error"):
        store.sql("SELEC * FROM runs")
    with pytest.raises(QueryError, match="exactly one"):
        store.sql("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="views: runs"):
        store.sql("SELECT * FROM no_such_table")
    with pytest.raises(QueryError, match="Permission"):  # SELECT can't read other files either
        store.sql("SELECT * FROM read_csv('/etc/hostname')")
    assert store.sql("DESCRIBE explanations").num_rows == len(tables.EXPLANATIONS)


def test_unknown_runs_and_samples_are_clear_errors(filled):
    store, run, _ = filled
    with pytest.raises(UnknownRunError, match="'nope' is not in the store"):
        store.run("nope")
    with pytest.raises(UnknownRunError):
        store.explanations(run_id="ffff0000")
    with pytest.raises(SampleNotFoundError, match="not in run"):
        store.explanation(run.run_id, "s999")
    with pytest.raises(SampleNotFoundError, match="failed in run .*decode.*broken"):
        store.explanation(run.run_id, "s005")
    with pytest.raises(SampleNotFoundError, match="no method 'lrp'"):
        store.explanation(run.run_id, "s001", method="lrp")
    assert {e.method for e in store.explanation(run.run_id[:5], "s001")} == {"chefer2021", "rollout"}


def test_bad_locations_are_clear_errors(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreLocationError, match="is a file"):
        Store.open(tmp_path / "file", create=True)
    with pytest.raises(StoreLocationError, match="no store at"):
        Store.open(tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("mine")
    with pytest.raises(StoreLocationError, match="not an attn-audit store and is not empty"):
        Store.open(tmp_path / "foreign", create=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreLocationError, match="not an attn-audit store"):
        Store.open(tmp_path / "empty")
    assert Store.open(tmp_path / "empty", create=True).runs().num_rows == 0


def test_a_store_from_a_newer_or_incompatible_schema_is_refused(tmp_path):
    store = Store.open(tmp_path / "s", create=True)
    table = DeltaTable(store.table_uri("explanations"))
    table.alter.set_table_description(json.dumps({"format": "attn-audit-store", "table": "explanations",
                                                  "schema_version": 99}))
    with pytest.raises(SchemaVersionError, match="newer attn-audit .*schema 99"):
        Store.open(tmp_path / "s")
    other = tmp_path / "other"
    Store.open(other, create=True)
    DeltaTable.create(str(other / "errors"), pa.schema([("run_id", pa.string())]), mode="overwrite",
                      description=json.dumps({"format": "attn-audit-store", "table": "errors", "schema_version": 1}))
    with pytest.raises(SchemaVersionError, match="incompatible schema"):
        Store.open(other)


def test_metrics_append_once_per_key_and_runs_status(filled):
    store, run, _ = filled
    rows = pa.Table.from_pylist([{"run_id": run.run_id, "method": "chefer2021", "metric": "deletion_auc",
                                  "modality": "image", "sample_id": None, "target_index": None, "value": 0.25,
                                  "details": None}], schema=tables.METRICS)
    assert store.append("metrics", rows, key=f"{run.run_id}:deletion") is True
    assert store.append("metrics", rows, key=f"{run.run_id}:deletion") is False
    assert store.metrics(run_id=run.run_id).num_rows == 1
    assert store.sql("SELECT value FROM metrics").to_pylist() == [{"value": 0.25}]
    store.set_status(run.run_id, "failed")
    assert store.run(run.run_id).status == "failed"
    again = store.begin_run(make_spec(shard_size=7))  # a resumed run keeps its layout
    assert again.run_id == run.run_id and again.shard_size == 4 and again.status == "running"
    assert store.finish_run(run.run_id).status == "completed_with_errors"


def test_optimize_and_vacuum_keep_every_row(filled):
    store, run, _ = filled
    before = store.explanations().sort_by([("sample_id", "ascending"), ("method", "ascending"),
                                           ("modality", "ascending")])
    report = store.optimize()
    assert report["explanations"]["numFilesRemoved"] > 0
    store.vacuum(retention_hours=0)
    after = store.explanations().sort_by([("sample_id", "ascending"), ("method", "ascending"),
                                          ("modality", "ascending")])
    assert after.equals(before)
    assert store.sql("SELECT count(*) AS n FROM explanations").to_pylist() == [{"n": 36}]
