"""`attn-audit explain`: explain a dataset with one or more methods into the explanation store.

The run is cut into shards (contiguous ranges of dataset positions); each shard is one atomic commit, so
an interrupted run resumes where it stopped: committed shards are skipped, the rest are recomputed.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

import models
from flows.progress import sample_progress
from storage import tables
from storage.datasets import open_dataset
from storage.store import RunSpec, Store, StoreError, fingerprint_files, fingerprint_text
from tasks.explain_dataset import explain_dataset, parse_target

DEFAULT_SHARD_SIZE = 1024  # samples per shard: the unit of commit and of resumption


@dataclass
class ExplainSummary:
    run_id: str
    samples: int
    explained: int
    failed: int
    correct: int
    labelled: int
    seconds: float
    paths: dict[str, str]
    first_errors: list[tuple[str, str, str]]
    status: str = "completed"
    shards: int = 0
    shards_skipped: int = 0  # already committed by an earlier (interrupted) run
    store: str = ""
    extra: dict = field(default_factory=dict)


def model_fingerprint(ref: str) -> str:
    files = models.checkpoint_files(ref)
    return fingerprint_files(files) if files else fingerprint_text(f"hub:{ref}")


def run_explain(model_ref: str, data_ref: str, methods: list[str], store: str | Store = "out/store",
                target="predicted", batch_size: int = 32, limit: int | None = None, device: str = "auto",
                precision: str = "float32", truncate: bool = False, progress: bool = True,
                shard_size: int = DEFAULT_SHARD_SIZE, relevance_dtype: str = "float32",
                storage_options: dict[str, str] | None = None) -> ExplainSummary:
    for name in methods:
        models.methods.get_method(name)  # unknown names fail before any loading
    policy = parse_target(target)
    if shard_size < 1:
        raise models.AttnAuditError("shard_size must be ≥ 1")
    try:
        store = store if isinstance(store, Store) else Store.open(store, create=True, storage_options=storage_options)
    except StoreError as err:
        raise models.AttnAuditError(str(err)) from None
    dataset = open_dataset(data_ref)
    m = models.load(model_ref, device=device, precision=precision, truncate=truncate)
    total = len(dataset) if limit is None else min(limit, len(dataset))
    spec = RunSpec(model_ref=model_ref, model_fingerprint=model_fingerprint(model_ref), dataset_ref=dataset.ref,
                   dataset_fingerprint=dataset.fingerprint(), methods=tuple(methods),
                   config={"target": policy, "limit": limit, "precision": precision, "truncate": truncate},
                   num_samples=total, shard_size=shard_size, relevance_dtype=relevance_dtype)
    label_names = getattr(dataset, "label_names", None) or m.label_names
    started = time.perf_counter()
    try:
        run = store.begin_run(spec)
    except StoreError as err:
        raise models.AttnAuditError(str(err)) from None
    committed = store.committed_shards(run.run_id)
    try:
        with sample_progress(f"explaining {total} samples", total, progress) as advance:
            for shard in range(run.num_shards):
                lo, hi = run.shard_range(shard)
                if shard in committed:
                    advance(hi - lo)
                    continue
                exps, preds, errors = [], [], []
                for result in explain_dataset(m, dataset, methods, policy, batch_size, lo, hi, advance):
                    exps.append(tables.explanation_table(result.explanations, run.run_id, shard))
                    preds.append(tables.prediction_table(result.explanations, run.run_id, result.labels,
                                                         label_names, shard))
                    errors.append(tables.error_table(result.failures(), run.run_id, shard))
                store.commit_shard(run.run_id, shard, explanations=_concat(exps, tables.EXPLANATIONS),
                                   predictions=_concat(preds, tables.PREDICTIONS),
                                   errors=_concat(errors, tables.ERRORS))
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more
            store.finish_run(run.run_id, failed=True)
        raise
    info = store.finish_run(run.run_id)
    correct = store.predictions(run_id=run.run_id, columns=["correct"])["correct"]
    first_errors = [(e["sample_id"], e["stage"], e["message"])
                    for e in store.errors(run_id=run.run_id).slice(0, 5).to_pylist()]
    return ExplainSummary(run.run_id, total, explained=info.explained, failed=info.failed,
                          correct=int(pc.sum(correct).as_py() or 0), labelled=len(correct) - correct.null_count,
                          seconds=time.perf_counter() - started, paths={"store": store.uri},
                          first_errors=first_errors, status=info.status, shards=info.num_shards,
                          shards_skipped=len(committed & set(range(run.num_shards))), store=store.uri)


def _concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(parts) if parts else schema.empty_table()
