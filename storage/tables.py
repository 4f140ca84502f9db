"""Arrow schemas of the store's tables (ARCHITECTURE.md, "Store") and rows built from results.

Readable without this package: plain Parquet with list columns (DuckDB reads them as FLOAT[] etc.).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

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
])

ERRORS = pa.schema([
    ("run_id", pa.string()),
    ("sample_id", pa.string()),
    ("stage", pa.string()),
    ("message", pa.string()),
])


def explanation_table(explanations, run_id: str) -> pa.Table:
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
    return pa.Table.from_pydict(rows, schema=EXPLANATIONS)


def prediction_table(explanations, run_id: str, labels: dict[str, object] | None = None,
                     label_names: list[str] | None = None) -> pa.Table:
    """One row per (sample, target), from the first method's explanation of it."""
    labels = labels or {}
    seen, rows = set(), {name: [] for name in PREDICTIONS.names}
    for exp in explanations:
        key = (exp.sample_id, exp.target)
        if exp.error is not None or key in seen:
            continue
        seen.add(key)
        label = labels.get(exp.sample_id)
        label_name = label_names[label] if isinstance(label, int) and label_names else label
        predicted_name = label_names[exp.prediction] if label_names else str(exp.prediction)
        values = dict(run_id=run_id, sample_id=exp.sample_id, target_index=exp.target,
                      target_label=exp.target_label, score=exp.score, probability=exp.probability,
                      prediction=exp.prediction, label=None if label is None else str(label_name),
                      correct=None if label is None else str(label_name) == predicted_name)
        for name, value in values.items():
            rows[name].append(value)
    return pa.Table.from_pydict(rows, schema=PREDICTIONS)


def error_table(failures: list[tuple[str, str, str]], run_id: str) -> pa.Table:
    """failures: (sample_id, stage, message)."""
    cols = list(zip(*failures)) if failures else ([], [], [])
    return pa.Table.from_pydict({"run_id": [run_id] * len(failures), "sample_id": list(cols[0]),
                                 "stage": list(cols[1]), "message": list(cols[2])}, schema=ERRORS)
