"""Explain one shard and commit it to the store: the one implementation behind `explain` and `audit`.

Whoever calls it (a Ray actor in the flows, a plain loop in a script) gets the same rows in the same
commit: explanations, predictions and errors of positions [shard.start, shard.stop), committed atomically
and idempotently by `Store.commit_shard`. A shard whose commit is already in the store is not computed
again (a retry after a worker died between its commit and its reply costs nothing).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
from attn_audit.models import LoadedModel
from attn_audit.storage import tables
from attn_audit.storage.store import Store
from attn_audit.tasks.explain_dataset import explain_dataset
from attn_audit.tasks.labels import label_map_for
from attn_audit.tasks.shards import Shard


@dataclass(frozen=True)
class ShardJob:
    """What to do with every shard of a run: everything but the shard itself. Small and picklable (it
    travels to the workers); the dataset is named by its reference and opened where the shard runs."""

    run_id: str
    data_ref: str
    methods: tuple[str, ...]
    target: str | int = "predicted"
    batch_size: int = 32
    label_map: dict | None = None  # the user's dataset label -> model class mapping (tasks.labels)


@dataclass(frozen=True)
class ShardResult:
    """What a shard added to the store (or found there), small enough to send back to the flow."""

    shard_id: int
    start: int
    stop: int
    explained: int  # prediction rows (sample × target)
    failed: int  # error rows (samples with no maps)
    maps: int  # explanation rows
    computed: bool  # False: the shard was already committed, nothing was computed or written
    seconds: float
    writer: str  # host:pid of the process that ran it
    commit_seconds: float = 0.0  # of `seconds`, spent committing to the store

    @property
    def samples(self) -> int:
        return self.stop - self.start


def explain_shard(m: LoadedModel, dataset, store: Store, run_id: str, shard: Shard, methods: Sequence[str],
                  target: str | int = "predicted", batch_size: int = 32, label_map: dict | None = None,
                  on_batch_done: Callable[[int], None] | None = None, skip_committed: bool = True) -> ShardResult:
    """Explain positions [shard.start, shard.stop) of `dataset` with `methods` and commit them as shard
    `shard.id` of run `run_id`. `on_batch_done(n)` is called after each batch of n positions. Labels are matched
    to the model's classes by name (tasks.labels), through the user's `label_map` first.

    `skip_committed`: look for the shard's commit first and compute nothing when it is there. A caller that
    knows the shard was pending (a first attempt) can save that look-up: the commit is idempotent anyway."""
    started = time.perf_counter()
    writer = f"{socket.gethostname()}:{os.getpid()}"
    marker = _marker(store, run_id, shard.id) if skip_committed else None
    if marker is not None:
        return ShardResult(shard.id, shard.start, shard.stop, marker["explained"], marker["failed"], marker["maps"],
                           computed=False, seconds=time.perf_counter() - started, writer=writer)
    labels = label_map_for(m.class_names, dataset, label_map)
    exps, preds, errors = [], [], []
    for result in explain_dataset(m, dataset, methods, target, batch_size, shard.start, shard.stop, on_batch_done,
                                  labels):
        exps.append(tables.explanation_table(result.explanations, run_id, shard.id))
        preds.append(tables.prediction_table(result.explanations, run_id, result.labels, shard.id))
        errors.append(tables.error_table(result.failures(), run_id, shard.id))
    rows = {"explanations": _concat(exps, tables.EXPLANATIONS), "predictions": _concat(preds, tables.PREDICTIONS),
            "errors": _concat(errors, tables.ERRORS)}
    committing = time.perf_counter()
    store.commit_shard(run_id, shard.id, **rows)
    done = time.perf_counter()
    return ShardResult(shard.id, shard.start, shard.stop, rows["predictions"].num_rows, rows["errors"].num_rows,
                       rows["explanations"].num_rows, computed=True, seconds=done - started, writer=writer,
                       commit_seconds=done - committing)


def _marker(store: Store, run_id: str, shard_id: int) -> dict | None:
    if shard_id not in store.committed_shards(run_id):
        return None
    rows = [r for r in store.shards(run_id).to_pylist() if r["shard_id"] == shard_id]
    return rows[0] if rows else None


def _concat(parts: list[pa.Table], schema: pa.Schema) -> pa.Table:
    return pa.concat_tables(parts) if parts else schema.empty_table()
