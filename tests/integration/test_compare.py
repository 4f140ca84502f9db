"""compare_runs on a real store holding two hand-made runs: per-sample agreement, metric deltas with intervals,
prediction changes, the most-changed samples, written once, read back by SQL and the report."""

from __future__ import annotations

import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from attn_audit.flows.cli import main
from attn_audit.models import AttnAuditError
from attn_audit.storage import tables
from attn_audit.storage.store import RunSpec, Store
from attn_audit.tasks.compare import compare_runs, comparisons_of, load_comparison
from attn_audit.tasks.evaluate.rows import metric_rows
from attn_audit.tasks.evaluate.settings import EvalSettings
from attn_audit.tasks.report import write_report

LABELS = ["cat", "dog"]
BASE = np.array([[0.1, 0.4], [0.3, 0.2]], np.float32)
# per sample: (baseline map, run map, baseline prediction, run prediction); label of every sample: 0 (cat)
SAMPLES = {
    "s0": (BASE, BASE, 0, 0),  # identical
    "s1": (BASE, -BASE, 0, 0),  # reversed ranking
    "s2": (BASE, BASE * 5 + 1, 0, 0),  # same ranking, other scale
    "s3": (BASE, BASE, 0, 1),  # the prediction changed (so did the explained target), the map did not
}


def add_run(store: Store, model_fp: str, which: int, methods=("chefer2021",)) -> str:
    spec = RunSpec(model_ref=f"ckpt-{which}", model_fingerprint=model_fp * 64, dataset_ref="builtin:fake",
                   dataset_fingerprint="d" * 64, methods=methods, config={"target": "predicted", "limit": None},
                   num_samples=len(SAMPLES), shard_size=len(SAMPLES))
    run = store.begin_run(spec)
    exps = []
    for sid, maps in SAMPLES.items():
        pred = maps[2 + which]
        for method in methods:
            exps.append(SimpleNamespace(sample_id=sid, method=method, target=pred, target_label=LABELS[pred],
                                        score=1.0, probability=0.9, prediction=pred, relevance={"image": maps[which]},
                                        tokens={}, special={}, error=None))
    store.commit_shard(run.run_id, 0, explanations=tables.explanation_table(exps, run.run_id),
                       predictions=tables.prediction_table(exps, run.run_id, dict.fromkeys(SAMPLES, (LABELS[0], 0))))
    store.finish_run(run.run_id)
    return run.run_id


def add_metric(store: Store, run_id: str, metric: str, values: list[float], targets: list[int]) -> None:
    rows = metric_rows()
    digest = EvalSettings().digest("perturbation")
    for sid, value, target in zip(SAMPLES, values, targets):
        rows.add(method="chefer2021", metric=metric, modality="image", sample_id=sid, target_index=target,
                 value=value, details={"eval": digest})
    store.append("metrics", rows.table(run_id), key=f"{run_id}:test:{metric}")


@pytest.fixture
def two_runs(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    a, b = add_run(store, "a", 0), add_run(store, "b", 1)
    add_metric(store, a, "auc_positive", [10, 20, 30, 40], [0, 0, 0, 0])
    add_metric(store, b, "auc_positive", [12, 22, 32, 42], [0, 0, 0, 1])
    return store, a, b


def test_per_sample_agreement_deltas_and_changed_predictions(two_runs):
    store, a, b = two_runs
    s = compare_runs(store, baseline=a, run=b)
    assert (s.run_id, s.baseline_run_id) == (b, a)
    samples = store.table("comparisons", run_id=b).to_pylist()
    rho = {r["sample_id"]: r["value"] for r in samples if r["kind"] == "sample" and r["metric"] == "spearman"}
    overlap = {r["sample_id"]: r["value"] for r in samples if r["kind"] == "sample" and r["metric"] == "top_k_overlap"}
    assert rho == pytest.approx({"s0": 1.0, "s1": -1.0, "s2": 1.0, "s3": 1.0})
    assert overlap == pytest.approx({"s0": 1.0, "s1": 0.0, "s2": 1.0, "s3": 1.0})  # k = ceil(0.1 · 4) = 1
    changed = next(r for r in samples if r["sample_id"] == "s3")
    assert (changed["baseline_target_index"], changed["target_index"]) == (0, 1)

    (spearman,) = [m for m in s.maps if m["metric"] == "spearman"]
    assert spearman["value"] == pytest.approx(0.5) and spearman["n"] == 4
    assert spearman["ci_low"] <= 0.5 <= spearman["ci_high"]
    (delta,) = s.deltas
    assert (delta["metric"], delta["n"]) == ("auc_positive", 4)
    assert (delta["value"], delta["ci_low"], delta["ci_high"]) == pytest.approx((2.0, 2.0, 2.0))
    assert (delta["baseline_mean"], delta["run_mean"], delta["better"]) == (25.0, 27.0, "baseline")  # lower wins
    preds = {p["metric"]: p for p in s.predictions}
    assert preds["changed"]["value"] == pytest.approx(0.25)
    assert preds["accuracy"]["value"] == pytest.approx(-0.25)  # s3 went from cat (right) to dog (wrong)
    assert [m["sample_id"] for m in s.most_changed][:1] == ["s1"]


def test_the_same_comparison_is_stored_once_and_readable_by_sql(two_runs):
    store, a, b = two_runs
    first = compare_runs(store, baseline=a[:6], run=b[:6])
    version = store.delta("comparisons").version()
    again = compare_runs(store, baseline=a, run=b)
    assert again.comparison_id == first.comparison_id and store.delta("comparisons").version() == version
    counts = store.sql("SELECT kind, count(*) AS n FROM comparisons GROUP BY kind ORDER BY kind").to_pylist()
    assert counts == [{"kind": "maps", "n": 2}, {"kind": "metric_delta", "n": 1}, {"kind": "predictions", "n": 2},
                      {"kind": "sample", "n": 8}]
    assert [c.baseline_run_id for c in comparisons_of(store, b)] == [a]
    assert load_comparison(store, a) is None  # nothing was compared with the baseline as the run


def test_refuses_the_same_run_twice_and_runs_without_shared_methods(two_runs, tmp_path):
    store, a, _ = two_runs
    with pytest.raises(AttnAuditError, match="two different runs"):
        compare_runs(store, baseline=a, run=a)
    other = add_run(store, "c", 1, methods=("rollout",))
    with pytest.raises(AttnAuditError, match="no method in common"):
        compare_runs(store, baseline=a, run=other)


def test_a_store_written_before_the_comparisons_table_opens_and_gets_it(two_runs):
    store, a, b = two_runs
    shutil.rmtree(f"{store.uri}/comparisons")
    reopened = Store.open(store.uri)  # read-only open of an older store: the table is added, empty
    assert reopened.table("comparisons").num_rows == 0
    compare_runs(reopened, baseline=a, run=b)
    assert reopened.table("comparisons", run_id=b).num_rows == 13


def test_the_report_shows_the_comparison(two_runs, tmp_path):
    store, a, b = two_runs
    compare_runs(store, baseline=a, run=b)
    page = write_report(store, b, tmp_path / "report").read_text()
    assert f"Compared with run {a}" in page and "spearman" in page and "auc_positive" in page
    assert "s1" in page  # the most-changed sample
    assert "Compared with" not in write_report(store, a, tmp_path / "report-a").read_text()


def test_the_compare_command_prints_the_tables_and_refuses_one_run(two_runs, capsys, monkeypatch):
    store, a, b = two_runs
    monkeypatch.setenv("COLUMNS", "200")  # wide enough that no cell folds
    assert main(["compare", "--store", store.uri, "--run", a[:6], "--run", b[:6], "--most-changed", "1"]) == 0
    out = capsys.readouterr().out
    assert f"run {b} vs baseline {a}" in out and "auc_positive" in out and "s1" in out
    assert re.search(r"\w+ \(\d+\) → \w+ \(\d+\)", out)  # the targets by class name and index
    assert store.table("comparisons", run_id=b).num_rows == 13
    assert main(["compare", "--store", store.uri, "--run", a]) == 1
    assert "give --run exactly twice" in capsys.readouterr().err
