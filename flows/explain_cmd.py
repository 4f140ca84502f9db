"""`attn-audit explain`: explain a dataset with one or more methods and write the long-format tables."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import models
from flows.progress import sample_progress
from storage import tables
from storage.datasets import open_dataset
from storage.parquet_writer import ParquetTablesWriter
from tasks.explain_dataset import explain_dataset, parse_target


@dataclass
class ExplainSummary:
    run_id: str
    samples: int
    explained: int
    failed: int
    correct: int
    labelled: int
    seconds: float
    paths: dict[str, Path]
    first_errors: list[tuple[str, str, str]]


def run_id_for(model_ref: str, data_ref: str, methods: list[str], target, limit) -> str:
    key = json.dumps([model_ref, data_ref, sorted(methods), str(target), limit])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def run_explain(model_ref: str, data_ref: str, methods: list[str], out: str, target="predicted",
                batch_size: int = 32, limit: int | None = None, device: str = "auto",
                precision: str = "float32", truncate: bool = False, progress: bool = True) -> ExplainSummary:
    for name in methods:
        models.methods.get_method(name)  # unknown names fail before any loading
    policy = parse_target(target)
    dataset = open_dataset(data_ref)
    m = models.load(model_ref, device=device, precision=precision, truncate=truncate)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    run_id = run_id_for(model_ref, data_ref, methods, policy, limit)
    label_names = getattr(dataset, "label_names", None) or m.label_names
    counts = dict(explained=0, failed=0, correct=0, labelled=0)
    first_errors: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    schemas = {"explanations": tables.EXPLANATIONS, "predictions": tables.PREDICTIONS, "errors": tables.ERRORS}
    with ParquetTablesWriter(out, schemas) as writer, \
            sample_progress(f"explaining {total} samples", total, progress) as advance:
        for result in explain_dataset(m, dataset, methods, policy, batch_size, 0, total, advance):
            failures = result.failures()
            preds = tables.prediction_table(result.explanations, run_id, result.labels, label_names)
            writer.write("explanations", tables.explanation_table(result.explanations, run_id))
            writer.write("predictions", preds)
            writer.write("errors", tables.error_table(failures, run_id))
            counts["explained"] += preds.num_rows
            counts["failed"] += len(failures)
            correct = [c for c in preds.column("correct").to_pylist() if c is not None]
            counts["correct"] += sum(correct)
            counts["labelled"] += len(correct)
            first_errors.extend(failures[: max(0, 5 - len(first_errors))])
    return ExplainSummary(run_id, total, seconds=time.perf_counter() - started, paths=writer.paths,
                          first_errors=first_errors, **counts)
