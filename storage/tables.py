"""Arrow schemas of the store's tables (ARCHITECTURE.md, "Store") and rows built from results.

Every table is plain Parquet inside a Delta Lake table, readable without this package (DuckDB reads the list
columns as FLOAT[] etc.). `shard_id` ties each row of predictions / explanations / errors to the shard commit
that wrote it: readers only see rows whose shard has a marker in `shards` (see storage/store).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

UTC_MICROS = pa.timestamp("us", tz="UTC")

RUNS = pa.schema([
    ("run_id", pa.string()),
    ("created_at", UTC_MICROS),
    ("updated_at", UTC_MICROS),
    ("model_ref", pa.string()),
    ("model_fingerprint", pa.string()),
    ("dataset_ref", pa.string()),
    ("dataset_fingerprint", pa.string()),
    ("methods", pa.list_(pa.string())),
    ("config", pa.string()),  # canonical JSON
    ("code_version", pa.string()),
    ("status", pa.string()),  # running | completed | completed_with_errors | failed
    ("num_samples", pa.int64()),  # dataset positions the run covers: [0, num_samples)
    ("shard_size", pa.int32()),  # shard k covers positions [k * shard_size, (k + 1) * shard_size)
])

SHARDS = pa.schema([  # one row per committed shard: the marker that makes its rows visible
    ("run_id", pa.string()),
    ("shard_id", pa.int32()),
    ("start", pa.int64()),
    ("stop", pa.int64()),
    ("samples", pa.int32()),  # dataset positions in [start, stop)
    ("explained", pa.int32()),  # prediction rows (sample × target)
    ("failed", pa.int32()),  # error rows
    ("maps", pa.int64()),  # explanation rows (sample × target × method × modality)
    ("committed_at", UTC_MICROS),
    ("writer", pa.string()),  # host:pid of the committing process
])

EXPLANATIONS = pa.schema([
    ("run_id", pa.string()),
    ("method", pa.string()),
    ("sample_id", pa.string()),
    ("target_index", pa.int32()),
    ("modality", pa.string()),
    ("shape", pa.list_(pa.int32())),
    ("relevance", pa.list_(pa.float32())),
    ("tokens", pa.list_(pa.string())),  # text only, else null
    ("special", pa.list_(pa.bool_())),  # text only, else null
    ("shard_id", pa.int32()),
])

PREDICTIONS = pa.schema([
    ("run_id", pa.string()),
    ("sample_id", pa.string()),
    ("target_index", pa.int32()),
    ("target_label", pa.string()),
    ("score", pa.float32()),
    ("probability", pa.float32()),
    ("prediction", pa.int32()),
    ("label", pa.string()),
    ("correct", pa.bool_()),
    ("shard_id", pa.int32()),
    ("target_detail", pa.string()),  # JSON: box + class, token position + text; {"note": ...} (e.g. a truncated text)
])

ERRORS = pa.schema([
    ("run_id", pa.string()),
    ("sample_id", pa.string()),
    ("stage", pa.string()),
    ("message", pa.string()),
    ("shard_id", pa.int32()),
])

METRICS = pa.schema([  # one value per (run, method, metric[, modality][, sample, target]); null sample = aggregate
    ("run_id", pa.string()),
    ("method", pa.string()),
    ("metric", pa.string()),
    ("modality", pa.string()),
    ("sample_id", pa.string()),
    ("target_index", pa.int32()),
    ("value", pa.float64()),
    ("details", pa.string()),  # JSON, optional
])

MAP_SUMS = pa.schema([  # per shard: relevance summed per position over the maps of a group (storage/store/map_sums)
    ("run_id", pa.string()),
    ("method", pa.string()),
    ("modality", pa.string()),
    ("target_label", pa.string()),  # the explained class (predictions.target_label)
    ("label", pa.string()),  # the sample's label as given (predictions.label)
    ("correct", pa.bool_()),
    ("position", pa.int32()),  # index into explanations.relevance (row-major over `shape`)
    ("maps", pa.int64()),  # maps of the group that have this position
    ("relevance_sum", pa.float64()),  # their relevance there, summed (as stored: float16-rounded if so)
    ("shard_id", pa.int32()),
])

PERTURBATION_CURVES = pa.schema([  # one point per (run, method, modality, perturbation, step[, sample])
    ("run_id", pa.string()),
    ("method", pa.string()),
    ("modality", pa.string()),
    ("perturbation", pa.string()),  # positive | negative
    ("sample_id", pa.string()),  # null: the dataset-level curve
    ("target_index", pa.int32()),
    ("step", pa.int32()),
    ("fraction", pa.float32()),  # share of tokens removed
    ("score", pa.float32()),
    ("probability", pa.float32()),
    ("accuracy", pa.float32()),  # dataset-level curves only
])


def explanation_table(explanations, run_id: str, shard_id: int = 0) -> pa.Table:
    """Long format: one row per (sample, target, method, modality). Failed explanations are skipped
    here; they belong in the errors table."""
    rows = {name: [] for name in EXPLANATIONS.names}
    for exp in explanations:
        if exp.error is not None:
            continue
        for modality, rel in exp.relevance.items():
            rel = np.asarray(rel, dtype=np.float32)
            rows["run_id"].append(run_id)
            rows["method"].append(exp.method)
            rows["sample_id"].append(exp.sample_id)
            rows["target_index"].append(exp.target)
            rows["modality"].append(modality)
            rows["shape"].append(list(rel.shape))
            rows["relevance"].append(rel.ravel())
            rows["tokens"].append(exp.tokens.get(modality))
            special = exp.special.get(modality)
            rows["special"].append(None if special is None else np.asarray(special, bool).tolist())
            rows["shard_id"].append(shard_id)
    return pa.Table.from_pydict(rows, schema=EXPLANATIONS)


def prediction_table(explanations, run_id: str, labels: dict[str, tuple[str, int | None]] | None = None,
                     shard_id: int = 0) -> pa.Table:
    """One row per (sample, target), from the first method's explanation of it; a sample of a many-target
    model with no target (no detections) gets one row with a null target_index and its note in target_detail.

    `labels`: sample_id -> (label name as given, the model's class index for it or None); `correct` compares
    that class with the prediction (null when unlabelled or when the label names no class of the model)."""
    labels = labels or {}
    seen, rows = set(), {name: [] for name in PREDICTIONS.names}
    for exp in explanations:
        key = (exp.sample_id, exp.target)
        if exp.error is not None or key in seen:
            continue
        seen.add(key)
        label_name, label_class = labels.get(exp.sample_id, (None, None))
        values = dict(run_id=run_id, sample_id=exp.sample_id, target_index=exp.target,
                      target_label=exp.target_label, score=exp.score, probability=exp.probability,
                      prediction=exp.prediction, label=label_name,
                      correct=None if label_class is None else label_class == exp.prediction, shard_id=shard_id,
                      target_detail=getattr(exp, "target_detail", None))  # duck-typed results may lack it
        for name, value in values.items():
            rows[name].append(value)
    return pa.Table.from_pydict(rows, schema=PREDICTIONS)


def error_table(failures: list[tuple[str, str, str]], run_id: str, shard_id: int = 0) -> pa.Table:
    """failures: (sample_id, stage, message)."""
    cols = list(zip(*failures)) if failures else ([], [], [])
    return pa.Table.from_pydict({"run_id": [run_id] * len(failures), "sample_id": list(cols[0]),
                                 "stage": list(cols[1]), "message": list(cols[2]),
                                 "shard_id": [shard_id] * len(failures)}, schema=ERRORS)


COMPARISONS = pa.schema([  # run_id (a new checkpoint's run) against baseline_run_id (the previous one)
    ("run_id", pa.string()),
    ("baseline_run_id", pa.string()),
    ("comparison_id", pa.string()),  # one computation: same runs, settings and inputs give the same id
    ("kind", pa.string()),  # sample | maps (mean over samples) | metric_delta | predictions
    ("method", pa.string()),  # null for kind = predictions
    ("modality", pa.string()),
    ("metric", pa.string()),  # spearman | top_k_overlap; an evaluation metric (metric_delta); changed | accuracy
    ("sample_id", pa.string()),  # kind = sample only
    ("target_index", pa.int32()),  # the run's target (kind = sample)
    ("baseline_target_index", pa.int32()),  # the baseline's target: differs where the prediction changed
    ("value", pa.float64()),  # per sample: the value; aggregates: the mean (of run − baseline for deltas)
    ("ci_low", pa.float64()),  # bootstrap 95% interval of an aggregate's mean
    ("ci_high", pa.float64()),
    ("n", pa.int64()),  # samples behind an aggregate
    ("details", pa.string()),  # JSON, optional
    ("created_at", UTC_MICROS),
])
