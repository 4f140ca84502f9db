"""The writing half of `Store`: runs, shard commits, appends, and the transaction keys that make each happen once.

Every commit records a Delta application transaction `attn-audit:<key>`: `<run_id>:run` for a run's row,
`<run_id>:shard:<shard_id>` for each table a shard writes (its rows, then its marker in `shards`), and the key the
caller gives to `append` (e.g. `<run_id>:deletion:shard:3`). A table that holds the key at version ≥ 1 has the
commit: it is skipped, so committing again is a no-op and a commit interrupted half-way is completed, never
duplicated. A repair that resets a shard records its key at version 0 (not committed) in the commit that deletes
its rows. `Store.is_committed(table, key)` answers for one key, `Store.committed_keys` for many on one snapshot.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Iterable
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from attn_audit.storage.store.errors import StoreConflictError, StoreError
from attn_audit.storage.store.layout import APPEND_TABLES, SHARD_TABLES, TABLES
from attn_audit.storage.store.map_sums import map_sums
from attn_audit.storage.store.provenance import canonical_json, code_version
from attn_audit.storage.store.records import RELEVANCE_DTYPES, STATUSES, RunInfo, RunSpec
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.writer.properties import ColumnProperties

DICTIONARY_COLUMNS = ("method", "modality", "stage", "label", "target_label", "metric", "perturbation", "status")
COMMIT_ATTEMPTS = 50


def shard_key(run_id: str, shard_id: int) -> str:
    """The key every commit of a shard records."""
    return f"{run_id}:shard:{shard_id}"


def transaction(key: str, version: int = 1) -> Transaction:
    """The Delta application transaction of `key` (version 1: committed; 0: reset by a repair)."""
    return Transaction(_transaction_id(key), version)


def holds(table: DeltaTable, key: str) -> bool:
    """Whether the snapshot `table` holds a commit of `key`: version ≥ 1 (a repair's reset records 0)."""
    version = table.transaction_version(_transaction_id(key))
    return version is not None and version >= 1


def writer_properties(table: str, relevance_dtype: str = "float32") -> WriterProperties:
    """How `table`'s Parquet files are written: zstd, with dictionaries for the low-cardinality strings, but the
    float32 maps of `explanations` in LZ4_RAW without dictionaries: maps barely compress (zstd saves ~8%), and LZ4
    decodes faster — over 1M stored maps, decoding alone (`sum(len(relevance))`) 1.86 s vs 2.80 s with zstd, the
    grouped mean per label × position 4.41 s vs 5.25 s (bench/bench_store.py, same 2-core machine, A/B).
    Maps rounded to float16 keep zstd with dictionaries (at most 65,536 distinct values: half the bytes of
    float32 maps).
    Nested columns cannot be addressed one by one, hence one setting for all the table's columns."""
    maps = table == "explanations"
    dictionary = maps and relevance_dtype == "float16"
    return WriterProperties(
        compression="LZ4_RAW" if maps and not dictionary else "ZSTD",
        compression_level=None if maps and not dictionary else 1,
        default_column_properties=ColumnProperties(dictionary_enabled=dictionary),
        column_properties={name: ColumnProperties(dictionary_enabled=True) for name in DICTIONARY_COLUMNS})


def backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * (0.5 + random.random()))


def sql_safe(run_id: str) -> str:
    """A run id fit for a Delta SQL predicate (ids are hex digits; anything else is refused)."""
    if not all(c.isalnum() or c in "-_" for c in run_id):
        raise StoreError(f"bad run id {run_id!r}")
    return run_id


class Committer:
    """Store's writing methods (Store supplies `delta`, `_read`, `table_uri`, `run` and `_runs_cache`)."""

    def begin_run(self, spec: RunSpec) -> RunInfo:
        """Create the run (status `running`) or, when it exists, mark it `running` again. Returns its
        current description: a resumed run keeps the shard size it was created with."""
        if spec.relevance_dtype not in RELEVANCE_DTYPES:
            raise StoreError(f"relevance_dtype must be one of {RELEVANCE_DTYPES}, got {spec.relevance_dtype!r}")
        if spec.shard_size < 1 or spec.num_samples < 0:
            raise StoreError("shard_size must be ≥ 1 and num_samples ≥ 0")
        run_id, now = spec.run_id, _now()
        row = pa.Table.from_pylist([{
            "run_id": run_id, "created_at": now, "updated_at": now, "model_ref": spec.model_ref,
            "model_fingerprint": spec.model_fingerprint, "dataset_ref": spec.dataset_ref,
            "dataset_fingerprint": spec.dataset_fingerprint, "methods": list(spec.methods),
            "config": canonical_json(spec.full_config()), "code_version": code_version(), "status": "running",
            "num_samples": spec.num_samples, "shard_size": spec.shard_size}], schema=TABLES["runs"].schema)
        if not self._append_once("runs", row, f"{run_id}:run"):
            self.set_status(run_id, "running")
        return self.run(run_id)

    def set_status(self, run_id: str, status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"status must be one of {STATUSES}, got {status!r}")
        run_id = self.run(run_id).run_id
        schema = TABLES["runs"].schema
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.delta("runs")
            row = self._read("runs", table, run_ids=[run_id])
            row = row.set_column(row.schema.get_field_index("status"), "status", pa.array([status] * row.num_rows))
            row = row.set_column(row.schema.get_field_index("updated_at"), "updated_at",
                                 pa.array([_now()] * row.num_rows, schema.field("updated_at").type))
            try:
                write_deltalake(table, row.select(schema.names).cast(schema), mode="overwrite",
                                predicate=f"run_id = '{sql_safe(run_id)}'", writer_properties=writer_properties("runs"))
                self._runs_cache.pop(run_id, None)
                return
            except CommitFailedError:
                backoff(attempt)
        raise StoreConflictError(f"could not update the status of run {run_id}: too many concurrent writers")

    def finish_run(self, run_id: str, failed: bool = False) -> RunInfo:
        """Set the final status: `failed`, or from the committed shards: `completed`, `completed_with_errors`
        (some samples failed), or `running` while shards are still missing (another process may add them)."""
        info = self.run(run_id)
        if failed:
            status = "failed"
        elif info.shards_committed < info.num_shards:
            status = "running"
        else:
            status = "completed_with_errors" if info.failed else "completed"
        self.set_status(info.run_id, status)
        return self.run(info.run_id)

    def commit_shard(self, run_id: str, shard_id: int, *, explanations: pa.Table | None = None,
                     predictions: pa.Table | None = None, errors: pa.Table | None = None) -> bool:
        """Commit one shard's rows (any of the three tables may be empty). Returns False, changing nothing,
        when the shard is already committed. Safe to call from several processes at once."""
        info = self._run_cached(run_id)
        run_id = info.run_id
        if not 0 <= shard_id < max(info.num_shards, 1):
            raise StoreError(f"shard {shard_id} is outside run {run_id} ({info.num_shards} shards)")
        key = shard_key(run_id, shard_id)
        if self.is_committed("shards", key):
            return False
        given = {"explanations": explanations, "predictions": predictions, "errors": errors}
        rows = {name: self._conform(name, given[name], run_id, shard_id, info.relevance_dtype) for name in given}
        rows["map_sums"] = map_sums(rows["explanations"], rows["predictions"])  # of the maps as stored
        for name in SHARD_TABLES:
            if rows[name].num_rows:
                self._append_once(name, rows[name], key, info.relevance_dtype)
        start, stop = info.shard_range(shard_id)
        marker = pa.Table.from_pylist([{
            "run_id": run_id, "shard_id": shard_id, "start": start, "stop": stop, "samples": stop - start,
            "explained": rows["predictions"].num_rows, "failed": rows["errors"].num_rows,
            "maps": rows["explanations"].num_rows, "committed_at": _now(),
            "writer": _writer()}], schema=TABLES["shards"].schema)
        return self._append_once("shards", marker, key)

    def append(self, name: str, rows: pa.Table, *, key: str | None = None) -> bool:
        """Append rows to `metrics`, `perturbation_curves` or `comparisons` in one commit. With a `key` (e.g.
        "<run_id>:deletion:shard:3") the commit happens at most once: a second call returns False."""
        if name not in APPEND_TABLES:
            raise StoreError(f"append() writes {', '.join(APPEND_TABLES)}; {name} is written by "
                             "begin_run / commit_shard")
        rows = _cast(name, rows)
        for run_id in set(rows["run_id"].to_pylist()):
            self._run_cached(run_id)
        if key is None:
            self._write("append", name, rows, None)
            return True
        return self._append_once(name, rows, key)

    def is_committed(self, table: str, key: str) -> bool:
        """Whether `table` holds the commit of `key` (what follows "attn-audit:" in its transaction id, e.g.
        "<run_id>:shard:3" or an `append` key). A shard reset by a repair is not committed."""
        return holds(self._snapshot(table), key)

    def committed_keys(self, table: str, keys: Iterable[str]) -> set[str]:
        """The keys among `keys` that `table` holds, all read from one snapshot of it."""
        snapshot = self._snapshot(table)
        return {k for k in keys if holds(snapshot, k)}

    def _snapshot(self, table: str) -> DeltaTable:
        if table not in TABLES:
            raise StoreError(f"no table {table!r}; tables: {', '.join(TABLES)}")
        return self.delta(table)

    def _run_cached(self, run_id: str) -> RunInfo:
        if run_id not in self._runs_cache:
            self._runs_cache[run_id] = self.run(run_id)
        return self._runs_cache[run_id]

    def _conform(self, name: str, rows: pa.Table | None, run_id: str, shard_id: int, dtype: str) -> pa.Table:
        schema = TABLES[name].schema
        if rows is None:
            return schema.empty_table()
        n = rows.num_rows
        rows = rows.drop_columns([c for c in ("run_id", "shard_id") if c in rows.column_names])
        rows = rows.append_column("run_id", pa.array([run_id] * n, pa.string()))
        rows = rows.append_column("shard_id", pa.array(np.full(n, shard_id, np.int32)))
        rows = _cast(name, rows)
        if name == "explanations" and dtype == "float16" and n:
            rows = rows.set_column(schema.get_field_index("relevance"), "relevance",
                                   _round_to_float16(rows["relevance"]))
        return rows

    def _write(self, mode: str, name: str, rows: pa.Table, table: DeltaTable | None,
               commit: CommitProperties | None = None, relevance_dtype: str = "float32") -> None:
        write_deltalake(table if table is not None else self.table_uri(name), rows, mode=mode,
                        writer_properties=writer_properties(name, relevance_dtype), commit_properties=commit,
                        storage_options=None if table is not None else self.storage_options)

    def _append_once(self, name: str, rows: pa.Table, key: str, relevance_dtype: str = "float32") -> bool:
        """Append in one commit that records the transaction of `key`; False when the table already has it.

        The check and the commit use the same snapshot: a concurrent commit of the same key makes ours
        fail Delta's conflict check, and the next attempt sees it and skips."""
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.delta(name)
            if holds(table, key):
                return False
            try:
                commit = CommitProperties(app_transactions=[transaction(key)],
                                          custom_metadata={"attn_audit_writer": _writer()})  # in the table history
                self._write("append", name, rows, table, commit, relevance_dtype)
                return True
            except CommitFailedError:
                backoff(attempt)
        raise StoreConflictError(f"could not commit to {name}: too many concurrent writers")


def _transaction_id(key: str) -> str:
    return f"attn-audit:{key}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _writer() -> str:
    """host:pid of the committing process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _cast(name: str, rows: pa.Table) -> pa.Table:
    schema = TABLES[name].schema
    missing = [f.name for f in schema if f.name not in rows.column_names]
    if missing:
        raise StoreError(f"rows for {name} lack column(s) {missing}; the schema is {schema.names}")
    try:
        return rows.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise StoreError(f"rows for {name} do not fit its schema: {err}") from None


def _round_to_float16(column: pa.ChunkedArray) -> pa.ChunkedArray:
    chunks = []
    for chunk in column.chunks:
        values = chunk.values.to_numpy(zero_copy_only=False).astype(np.float16).astype(np.float32)
        chunks.append(pa.ListArray.from_arrays(chunk.offsets, pa.array(values), mask=chunk.is_null()))
    return pa.chunked_array(chunks, type=column.type)
