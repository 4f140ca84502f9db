"""Aggregation (SPEC.md §5.3): per (run, method, metric, modality) the mean over samples with a bootstrap 95%
interval, a ranking of the methods in the metric's direction with paired significance, and the dataset-level
perturbation curves — read back from the store, written to it once per distinct input.

Aggregate rows are `metrics` rows with a null sample_id; their `details` hold ci_low, ci_high, n, rank,
higher_is_better and not_significant_vs (methods whose paired difference interval contains 0). Dataset curves
are `perturbation_curves` rows with a null sample_id (mean score / probability, accuracy = share correct).
"""

from __future__ import annotations

import hashlib
import io
import json

import pyarrow as pa
import pyarrow.compute as pc
from attn_audit.storage.store import Store
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.rows import curve_rows, metric_rows
from attn_audit.tasks.evaluate.settings import TESTS, EvalSettings
from attn_audit.tasks.evaluate.specs import metric_spec
from attn_audit.tasks.evaluate.stats import rank_methods

SAMPLE_KEY = ["method", "metric", "modality", "sample_id", "target_index"]
CURVE_KEY = ["method", "modality", "perturbation", "step", "fraction"]


def current_sample_rows(table: pa.Table, settings: EvalSettings) -> pa.Table:
    """Per-sample rows written under the current settings, one per (method, metric, modality, sample, target)."""
    rows = table.filter(pc.and_(pc.is_valid(table["sample_id"]), _current_digest(table, settings)))
    # the same sample evaluated twice (overlapping --limit chunks) counts once
    return rows.group_by(SAMPLE_KEY, use_threads=False).aggregate([("value", "mean")]).rename_columns(
        [*SAMPLE_KEY, "value"])


def _current_digest(table: pa.Table, settings: EvalSettings) -> pa.ChunkedArray:
    """Rows whose details name the digest of the current settings of their test."""
    found = None
    for test in TESTS:
        hit = pc.match_substring(table["details"], f'"eval": "{settings.digest(test)}"')
        found = hit if found is None else pc.or_(found, hit)
    return pc.fill_null(found, False)


def stored_notes(store: Store, run_id: str, settings: EvalSettings | None = None) -> Notes:
    """The `skipped` notes of the evaluation with these settings, summed over its chunks; without settings (a
    report of whatever was evaluated), of each note the evaluation that skipped most."""
    table = store.metrics(run_id=run_id)
    skipped = pc.equal(table["metric"], "skipped")
    table = table.filter(skipped if settings is None else pc.and_(skipped, _current_digest(table, settings)))
    per_eval: dict[str, Notes] = {}
    for r in table.to_pylist():
        d = json.loads(r["details"])
        per_eval.setdefault(d.get("eval"), Notes()).add(r["method"], r["modality"], d["test"], d["reason"],
                                                        int(r["value"]))
    merged = Notes()
    for notes in per_eval.values():
        for key, count in notes.items():
            merged[key] = max(merged[key], count)
    return merged


def _digest(*tables: pa.Table) -> str:
    h = hashlib.sha256()
    for t in tables:
        sink = io.BytesIO()
        with pa.ipc.new_stream(sink, t.schema) as writer:
            writer.write_table(t.combine_chunks())
        h.update(sink.getvalue())
    return h.hexdigest()[:16]


def metric_summary(rows: pa.Table, settings: EvalSettings) -> list[dict]:
    """One dict per (method, metric, modality): mean, interval, n, rank and significance."""
    groups: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows.to_pylist():
        per_method = groups.setdefault((r["metric"], r["modality"]), {})
        per_method.setdefault(r["method"], {})[(r["sample_id"], r["target_index"])] = r["value"]
    out = []
    for (metric, modality), per_method in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
        spec = metric_spec(metric)
        for ranked in rank_methods(per_method, spec.higher_is_better, settings.resamples, settings.seed):
            out.append(dict(method=ranked.method, metric=metric, modality=modality, mean=ranked.interval.mean,
                            ci_low=ranked.interval.low, ci_high=ranked.interval.high, n=ranked.interval.n,
                            rank=ranked.rank, methods_ranked=len(per_method),
                            higher_is_better=spec.higher_is_better, test=spec.test,
                            not_significant_vs=sorted(ranked.not_significant_vs)))
    return out


def dataset_curves(store: Store, run_id: str) -> pa.Table:
    """Mean curve per (method, modality, perturbation, step) over the per-sample curve rows."""
    table = store.perturbation_curves(run_id=run_id)
    table = table.filter(pc.is_valid(table["sample_id"]))
    per_sample = table.group_by([*CURVE_KEY, "sample_id", "target_index"], use_threads=False).aggregate(
        [("score", "mean"), ("probability", "mean"), ("accuracy", "mean")])
    return per_sample.group_by(CURVE_KEY, use_threads=False).aggregate(
        [("score_mean", "mean"), ("probability_mean", "mean"), ("accuracy_mean", "mean"), ("sample_id", "count")])


def aggregate_run(store: Store, run_id: str, settings: EvalSettings) -> tuple[list[dict], pa.Table]:
    """Compute and store (once per distinct input) the aggregate metric rows and the dataset curves."""
    samples = current_sample_rows(store.metrics(run_id=run_id), settings)
    summary = metric_summary(samples, settings)
    curves = dataset_curves(store, run_id)
    key = f"{run_id}:evaluate:aggregate:{settings.digest('aggregate')}:{_digest(samples, curves)}"
    metrics = metric_rows()
    for s in summary:
        details = {k: s[k] for k in ("ci_low", "ci_high", "n", "rank", "methods_ranked", "higher_is_better",
                                     "not_significant_vs")}
        metrics.add(method=s["method"], metric=s["metric"], modality=s["modality"], value=s["mean"],
                    details={**details, "confidence": 0.95, "resamples": settings.resamples, "seed": settings.seed,
                             "eval": settings.digest(s["test"]), "aggregate": key.rsplit(":", 1)[1]})
    if len(metrics):
        store.append("metrics", metrics.table(run_id), key=key)
    rows = curve_rows()
    for c in curves.to_pylist():
        rows.add(method=c["method"], modality=c["modality"], perturbation=c["perturbation"], step=c["step"],
                 fraction=c["fraction"], score=c["score_mean_mean"], probability=c["probability_mean_mean"],
                 accuracy=c["accuracy_mean_mean"])
    if len(rows):
        store.append("perturbation_curves", rows.table(run_id), key=key)
    return summary, curves


def stored_summary(store: Store, run_id: str) -> list[dict]:
    """The latest aggregate rows of a run (largest n per method, metric and modality), as dicts."""
    table = store.metrics(run_id=run_id)
    table = table.filter(pc.and_(pc.is_null(table["sample_id"]), pc.not_equal(table["metric"], "skipped")))
    best: dict[tuple, dict] = {}
    for r in table.to_pylist():
        d = json.loads(r["details"] or "{}")
        row = dict(method=r["method"], metric=r["metric"], modality=r["modality"], mean=r["value"], **d)
        key = (r["method"], r["metric"], r["modality"])
        if key not in best or row.get("n", 0) >= best[key].get("n", 0):
            best[key] = row
    return sorted(best.values(), key=lambda r: (r["metric"], str(r["modality"]), r.get("rank", 0), r["method"]))
