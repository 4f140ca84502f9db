"""The explanation store: Delta Lake tables with provenance, one commit per shard, and a read API.

Atomicity across tables: a shard writes its rows into `explanations`, `predictions` and `errors` (one Delta
commit each), then its marker row into `shards`. Every commit carries the Delta application transaction
`attn-audit:<run_id>:shard:<shard_id>`; a table that already holds that transaction is skipped, so re-committing
a shard is a no-op and a commit interrupted half-way is completed, never duplicated, by the next attempt.
Readers (this API and the DuckDB views) only see rows whose (run_id, shard_id) has a marker, so a shard is
visible in all tables at once or in none.
"""

from __future__ import annotations

import math
import os
import random
import socket
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from attn_audit.storage.store.errors import (
    SampleNotFoundError,
    SchemaVersionError,
    StoreConflictError,
    StoreDamagedError,
    StoreError,
    StoreLocationError,
    UnknownRunError,
    first_line,
)
from attn_audit.storage.store.layout import (
    ADDED_COLUMNS,
    ADDED_TABLES,
    APPEND_TABLES,
    SCHEMA_VERSION,
    SHARD_TABLES,
    TABLES,
    description,
    parse_description,
)
from attn_audit.storage.store.paths import local_store_path
from attn_audit.storage.store.provenance import canonical_json, code_version
from attn_audit.storage.store.records import RELEVANCE_DTYPES, STATUSES, RunInfo, RunSpec, StoredExplanation
from deltalake import CommitProperties, DeltaTable, Field, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.writer.properties import ColumnProperties

if TYPE_CHECKING:
    from attn_audit.storage.store.check import CheckReport

DICTIONARY_COLUMNS = ("method", "modality", "stage", "label", "target_label", "metric", "perturbation", "status")
COMMIT_ATTEMPTS = 50


def writer_properties(dictionary: bool = False) -> WriterProperties:
    """zstd; dictionaries for the low-cardinality strings. Float32 maps get no dictionary (it never pays off
    and slows reads); maps rounded to float16 do (`dictionary=True`: at most 65,536 distinct values, ~30%
    smaller files). Nested columns cannot be addressed one by one, hence the default for all columns."""
    return WriterProperties(
        compression="ZSTD", compression_level=1,
        default_column_properties=ColumnProperties(dictionary_enabled=dictionary),
        column_properties={name: ColumnProperties(dictionary_enabled=True) for name in DICTIONARY_COLUMNS})


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _txn(run_id: str, what: str) -> str:
    return f"attn-audit:{run_id}:{what}"


def shard_txn(run_id: str, shard_id: int) -> str:
    """The application transaction every commit of a shard carries."""
    return _txn(run_id, f"shard:{shard_id}")


def holds_transaction(table: DeltaTable, txn: str) -> bool:
    """Whether the table holds a commit of `txn`: version 1. A repair that resets a shard records version 0
    (not committed) in the same commit that deletes its rows, so that the shard can be committed again."""
    version = table.transaction_version(txn)
    return version is not None and version >= 1


def _writer() -> str:
    """host:pid of the committing process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * (0.5 + random.random()))


class Store:
    """A folder (or object-store prefix) of Delta tables. Cheap to create; holds no open handles, so one
    object can be used from many threads and many processes can open the same store."""

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri
        self.storage_options = storage_options or None
        self._runs_cache: dict[str, RunInfo] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, location: str | Path, *, create: bool = False,
             storage_options: dict[str, str] | None = None, strict: bool = True) -> Store:
        """Open the store at a local path or a URI (s3://, gs://, az://, file://). `create=True` makes the
        tables that are missing; otherwise a location with no store is an error. A damaged store (a table lost,
        a log unreadable) raises StoreDamagedError; `strict=False` opens it anyway, for `check()` / `repair()`."""
        uri = str(location)
        if not _is_remote(uri):
            path = local_store_path(uri)
            _check_local_location(path, create)
            uri = str(path)
        store = cls(uri.rstrip("/"), storage_options)
        try:
            if create:
                store._create_missing_tables()
            store._check_tables(create)
        except StoreDamagedError:
            if strict:
                raise
        return store

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def delta(self, name: str) -> DeltaTable:
        """The Delta table behind `name`, loaded at its latest version."""
        try:
            return DeltaTable(self.table_uri(name), storage_options=self.storage_options)
        except DeltaError as err:  # no log, or one that cannot be read: a one-line error, not a Rust backtrace
            raise self._damaged(name, err) from None

    def _read(self, name: str, table: DeltaTable | None = None, **scan) -> pa.Table:
        """Rows of table `name` (of snapshot `table` when given; `scan`: columns, filter); StoreDamagedError
        when a data file is missing or unreadable."""
        try:
            return (self.delta(name) if table is None else table).to_pyarrow_dataset().to_table(**scan)
        except (OSError, pa.ArrowInvalid) as err:
            raise self._damaged(name, err) from None

    def _damaged(self, name: str | None, err: Exception | None = None) -> StoreDamagedError:
        """The error for a table (None: some table) that cannot be read: what the check finds wrong (one line,
        with what to do), else the reader's own first line."""
        from attn_audit.storage.store.check import check, check_table

        try:
            report = check(self) if name is None else check_table(self, name)
        except (OSError, DeltaError, pa.ArrowInvalid):  # damage the check cannot read past (remote stores)
            report = None
        if report is not None and not report.clean:
            return StoreDamagedError(report.message())
        what, reason = f"table {name}" if name else "a table", "" if err is None else f" ({first_line(err)})"
        return StoreDamagedError(f"{what} of {self.uri} cannot be read{reason}; run `attn-audit store check --store "
                                 f"{self.uri}`")

    def _exists(self, name: str) -> bool:
        return DeltaTable.is_deltatable(self.table_uri(name), storage_options=self.storage_options)

    def _create_missing_tables(self) -> None:
        """Create the tables of a new store, and in an existing one those added since it was written
        (ADDED_TABLES). Never one that existed: a missing table of an existing store, or a table folder holding
        data files but no log, is damage (StoreDamagedError), not something to start again empty."""
        existing_store = self._exists("runs")  # created last
        for name in TABLES:
            if self._exists(name):
                continue
            if (existing_store and name not in ADDED_TABLES) or self._data_files(name):
                raise self._damaged(name)
            self._create_table(name)

    def _create_table(self, name: str) -> None:
        spec = TABLES[name]
        try:
            DeltaTable.create(self.table_uri(name), spec.schema, mode="ignore", partition_by=list(spec.partition_by),
                              name=name, description=description(name), storage_options=self.storage_options)
        except (DeltaError, OSError):  # another process created it at the same moment
            if not self._exists(name):
                raise

    def _data_files(self, name: str) -> list[Path]:
        """The Parquet files in a local table's folder, referenced or not (object stores are not listed)."""
        if _is_remote(self.uri):
            return []
        return [p for p in Path(self.table_uri(name)).rglob("*.parquet") if "_delta_log" not in p.parts]

    def _add_missing_columns(self) -> None:
        for name, columns in ADDED_COLUMNS.items():
            table = self.delta(name)
            missing = [c for c in columns if c not in table.schema().to_arrow().names]
            if not missing:
                continue
            try:
                table.alter.add_columns([Field.from_arrow(TABLES[name].schema.field(c)) for c in missing])
            except (DeltaError, OSError):  # another process added them at the same moment
                if any(c not in self.delta(name).schema().to_arrow().names for c in missing):
                    raise

    def _check_tables(self, create: bool) -> None:
        if not self._exists("runs"):
            raise StoreLocationError(f"{self.uri} is not an attn-audit store (no runs table)"
                                     + ("" if create else "; `attn-audit explain --store` creates one"))
        if not all(self._exists(name) for name in TABLES):  # a store written before ADDED_TABLES, or damage
            self._create_missing_tables()
        self._add_missing_columns()
        for name, spec in TABLES.items():
            table = self.delta(name)
            info = parse_description(table.metadata().description)
            if info is None:
                raise StoreLocationError(f"{self.table_uri(name)} is a Delta table that attn-audit did not write")
            version = info.get("schema_version")
            if not isinstance(version, int) or version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.uri} was written by a newer attn-audit (store schema {version}; this version reads "
                    f"schema {SCHEMA_VERSION}); upgrade attn-audit to read it")
            if version < SCHEMA_VERSION:
                raise SchemaVersionError(f"{self.uri} has store schema {version}, which this version "
                                         f"(schema {SCHEMA_VERSION}) cannot read; re-run the audits into a new store")
            stored = pa.schema(table.schema().to_arrow())
            for field in spec.schema:
                if field.name not in stored.names or not _same_type(stored.field(field.name).type, field.type):
                    raise SchemaVersionError(
                        f"table '{name}' of {self.uri} has an incompatible schema (column {field.name!r}: "
                        f"{stored.field(field.name).type if field.name in stored.names else 'missing'}, "
                        f"expected {field.type})")

    # ------------------------------------------------------------------ runs
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
        if not self._append_once("runs", row, _txn(run_id, "run")):
            self.set_status(run_id, "running")
        return self.run(run_id)

    def set_status(self, run_id: str, status: str) -> None:
        if status not in STATUSES:
            raise StoreError(f"status must be one of {STATUSES}, got {status!r}")
        run_id = self.run(run_id).run_id
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.delta("runs")
            row = self._read("runs", table, filter=pc.field("run_id") == run_id)
            row = row.set_column(row.schema.get_field_index("status"), "status", pa.array([status] * row.num_rows))
            row = row.set_column(row.schema.get_field_index("updated_at"), "updated_at",
                                 pa.array([_now()] * row.num_rows, TABLES["runs"].schema.field("updated_at").type))
            try:
                write_deltalake(table, row.select(TABLES["runs"].schema.names).cast(TABLES["runs"].schema),
                                mode="overwrite", predicate=f"run_id = '{_sql_safe(run_id)}'",
                                writer_properties=writer_properties())
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

    def runs(self) -> pa.Table:
        """Every run with its committed shards, samples, explained samples, failures and maps."""
        runs = self._read("runs").cast(TABLES["runs"].schema)
        shards = self._read("shards", columns=["run_id", "shard_id", "samples", "explained", "failed", "maps"])
        sums = shards.group_by("run_id").aggregate([
            ("shard_id", "count"), ("samples", "sum"), ("explained", "sum"), ("failed", "sum"), ("maps", "sum")])
        by_run = {r["run_id"]: r for r in sums.to_pylist()}
        extra = {"num_shards": [], "shards_committed": [], "samples_done": [], "explained": [], "failed": [],
                 "maps": []}
        for run_id, n, size in zip(runs["run_id"].to_pylist(), runs["num_samples"].to_pylist(),
                                   runs["shard_size"].to_pylist()):
            got = by_run.get(run_id, {})
            extra["num_shards"].append(math.ceil(n / size) if size else 0)
            extra["shards_committed"].append(got.get("shard_id_count", 0))
            for key in ("samples_done", "explained", "failed", "maps"):
                source = "samples_sum" if key == "samples_done" else f"{key}_sum"
                extra[key].append(got.get(source) or 0)
        for key, values in extra.items():
            runs = runs.append_column(key, pa.array(values, pa.int64()))
        return runs.sort_by([("created_at", "ascending"), ("run_id", "ascending")])

    def run(self, run_id: str) -> RunInfo:
        """A run by id or unique id prefix; UnknownRunError otherwise."""
        if not isinstance(run_id, str) or not run_id:
            raise UnknownRunError("give a run id (see `attn-audit runs --store ...`)")
        table = self.runs()
        ids = table["run_id"].to_pylist()
        matches = ([i for i, r in enumerate(ids) if r == run_id]
                   or [i for i, r in enumerate(ids) if r.startswith(run_id)])
        if len(matches) != 1:
            known = ", ".join(ids[:10]) + (" ..." if len(ids) > 10 else "") if ids else "none"
            what = "is ambiguous" if matches else "is not in"
            raise UnknownRunError(f"run {run_id!r} {what} the store {self.uri} (runs: {known})")
        row = table.slice(matches[0], 1).to_pylist()[0]
        row.pop("num_shards")
        return RunInfo(**row)

    def _run_cached(self, run_id: str) -> RunInfo:
        if run_id not in self._runs_cache:
            self._runs_cache[run_id] = self.run(run_id)
        return self._runs_cache[run_id]

    # ------------------------------------------------------------------ writing
    def committed_shards(self, run_id: str) -> set[int]:
        table = self._read("shards", columns=["shard_id"], filter=pc.field("run_id") == run_id)
        return set(table["shard_id"].to_pylist())

    def commit_shard(self, run_id: str, shard_id: int, *, explanations: pa.Table | None = None,
                     predictions: pa.Table | None = None, errors: pa.Table | None = None) -> bool:
        """Commit one shard's rows (any of the three tables may be empty). Returns False, changing nothing,
        when the shard is already committed. Safe to call from several processes at once."""
        info = self._run_cached(run_id)
        run_id = info.run_id
        if not 0 <= shard_id < max(info.num_shards, 1):
            raise StoreError(f"shard {shard_id} is outside run {run_id} ({info.num_shards} shards)")
        txn = shard_txn(run_id, shard_id)
        if holds_transaction(self.delta("shards"), txn):
            return False
        given = {"explanations": explanations, "predictions": predictions, "errors": errors}
        rows = {name: self._conform(name, given[name], run_id, shard_id, info.relevance_dtype) for name in SHARD_TABLES}
        for name in SHARD_TABLES:
            if rows[name].num_rows:
                self._append_once(name, rows[name], txn,
                                  dictionary=name == "explanations" and info.relevance_dtype == "float16")
        start, stop = info.shard_range(shard_id)
        marker = pa.Table.from_pylist([{
            "run_id": run_id, "shard_id": shard_id, "start": start, "stop": stop, "samples": stop - start,
            "explained": rows["predictions"].num_rows, "failed": rows["errors"].num_rows,
            "maps": rows["explanations"].num_rows, "committed_at": _now(),
            "writer": _writer()}], schema=TABLES["shards"].schema)
        return self._append_once("shards", marker, txn)

    def append(self, name: str, rows: pa.Table, *, key: str | None = None) -> bool:
        """Append rows to `metrics`, `perturbation_curves` or `comparisons` in one commit. With a `key` (e.g.
        "<run_id>:deletion:shard:3") the commit happens at most once: a second call returns False."""
        if name not in APPEND_TABLES:
            raise StoreError(f"append() writes {', '.join(APPEND_TABLES)}; {name} is written by "
                             "begin_run / commit_shard")
        rows = _cast(name, rows)
        run_ids = set(rows["run_id"].to_pylist())
        for run_id in run_ids:
            self._run_cached(run_id)
        if key is None:
            self._write("append", name, rows, None)
            return True
        return self._append_once(name, rows, f"attn-audit:{key}")

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
               commit: CommitProperties | None = None, dictionary: bool = False) -> None:
        write_deltalake(table if table is not None else self.table_uri(name), rows, mode=mode,
                        writer_properties=writer_properties(dictionary), commit_properties=commit,
                        storage_options=None if table is not None else self.storage_options)

    def _append_once(self, name: str, rows: pa.Table, txn: str, dictionary: bool = False) -> bool:
        """Append in one commit that records transaction `txn`; False when the table already has it.

        The check and the commit use the same snapshot: a concurrent commit of the same `txn` makes ours
        fail Delta's conflict check, and the next attempt sees it and skips."""
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.delta(name)
            if holds_transaction(table, txn):
                return False
            try:
                commit = CommitProperties(app_transactions=[Transaction(txn, 1)],
                                          custom_metadata={"attn_audit_writer": _writer()})  # in the table history
                self._write("append", name, rows, table, commit, dictionary)
                return True
            except CommitFailedError:
                backoff(attempt)
        raise StoreConflictError(f"could not commit to {name}: too many concurrent writers")

    # ------------------------------------------------------------------ reading
    def table(self, name: str, *, run_id: str | None = None, method: str | Iterable[str] | None = None,
              sample_ids: Iterable[str] | None = None, modality: str | Iterable[str] | None = None,
              columns: list[str] | None = None) -> pa.Table:
        """Rows of one table as Arrow, filtered by run (id or prefix), method(s), sample ids, modality(ies).
        Rows of shards whose commit has not finished are never returned."""
        if name not in TABLES:
            raise StoreError(f"no table {name!r}; tables: {', '.join(TABLES)}")
        spec = TABLES[name]
        if run_id is not None:
            run_id = self.run(run_id).run_id
        committed = self._committed_filter(run_id) if spec.gated else None  # markers first, data after
        filters = [] if committed is None else [committed]
        if run_id is not None:
            filters.append(pc.field("run_id") == run_id)
        for column, wanted in (("method", method), ("modality", modality), ("sample_id", sample_ids)):
            if wanted is not None and column in spec.schema.names:
                values = [wanted] if isinstance(wanted, str) else list(wanted)
                filters.append(pc.field(column).isin(values))
        expression = None
        for f in filters:
            expression = f if expression is None else expression & f
        wanted_columns = columns or spec.schema.names
        unknown = [c for c in wanted_columns if c not in spec.schema.names]
        if unknown:
            raise StoreError(f"table {name} has no column(s) {unknown}; columns: {spec.schema.names}")
        table = self._read(name, columns=wanted_columns, filter=expression)
        return table.cast(pa.schema([spec.schema.field(c) for c in wanted_columns]))

    def frame(self, name: str, **filters):
        """Like `table()`, as a pandas DataFrame (needs pandas)."""
        return self.table(name, **filters).to_pandas()

    def explanations(self, **filters) -> pa.Table:
        return self.table("explanations", **filters)

    def predictions(self, **filters) -> pa.Table:
        return self.table("predictions", **filters)

    def errors(self, **filters) -> pa.Table:
        return self.table("errors", **filters)

    def metrics(self, **filters) -> pa.Table:
        return self.table("metrics", **filters)

    def perturbation_curves(self, **filters) -> pa.Table:
        return self.table("perturbation_curves", **filters)

    def shards(self, run_id: str | None = None) -> pa.Table:
        return self.table("shards", run_id=run_id)

    def load_explanations(self, run_id: str, *, method: str | Iterable[str] | None = None,
                          sample_ids: Iterable[str] | None = None,
                          modality: str | Iterable[str] | None = None) -> list[StoredExplanation]:
        """Explanation objects with numpy maps (float32, stored shape), one per (sample, target, method),
        ordered by sample id, target and method."""
        run_id = self.run(run_id).run_id
        sample_ids = None if sample_ids is None else list(sample_ids)
        maps = self.table("explanations", run_id=run_id, method=method, sample_ids=sample_ids, modality=modality)
        preds = self.table("predictions", run_id=run_id, sample_ids=sample_ids)
        pred_by_key = {(p["sample_id"], p["target_index"]): p for p in preds.to_pylist()}
        out: dict[tuple, StoredExplanation] = {}
        flat = maps["relevance"].combine_chunks()
        values, offsets = flat.values.to_numpy(zero_copy_only=False), flat.offsets.to_numpy()
        meta = maps.select(["sample_id", "method", "target_index", "modality", "shape", "tokens",
                            "special"]).to_pylist()
        for i, row in enumerate(meta):
            key = (row["sample_id"], row["target_index"], row["method"])
            if key not in out:
                pred = pred_by_key.get((row["sample_id"], row["target_index"]), {})
                out[key] = StoredExplanation(
                    run_id=run_id, sample_id=row["sample_id"], method=row["method"], target=row["target_index"],
                    target_label=pred.get("target_label"), score=_or_nan(pred.get("score")),
                    probability=_or_nan(pred.get("probability")), prediction=pred.get("prediction"),
                    label=pred.get("label"), target_detail=pred.get("target_detail"))
            exp, modality_name = out[key], row["modality"]
            exp.relevance[modality_name] = values[offsets[i]:offsets[i + 1]].astype(np.float32).reshape(row["shape"])
            if row["tokens"] is not None:
                exp.tokens[modality_name] = row["tokens"]
            if row["special"] is not None:
                exp.special[modality_name] = np.asarray(row["special"], dtype=bool)
        return [out[k] for k in sorted(out, key=lambda k: (k[0], k[1] if k[1] is not None else -1, k[2]))]

    def explanation(self, run_id: str, sample_id: str, method: str | None = None) -> list[StoredExplanation]:
        """One sample's explanations (every target, one method or all); SampleNotFoundError says whether
        the sample failed in the run or is not part of it."""
        info = self.run(run_id)
        if method is not None and method not in info.methods:
            raise SampleNotFoundError(f"run {info.run_id} has no method {method!r} (methods: "
                                      f"{', '.join(info.methods)})")
        found = self.load_explanations(info.run_id, method=method, sample_ids=[sample_id])
        if found:
            return found
        failed = self.table("errors", run_id=info.run_id, sample_ids=[sample_id]).to_pylist()
        if failed:
            raise SampleNotFoundError(f"sample {sample_id!r} failed in run {info.run_id} "
                                      f"({failed[0]['stage']}): {failed[0]['message']}")
        raise SampleNotFoundError(f"sample {sample_id!r} is not in run {info.run_id} "
                                  f"({info.samples_done:,} samples committed of {info.num_samples:,})")

    def sample_shard(self, run_id: str, sample_id: str) -> tuple[int, int] | None:
        """The dataset position range [start, stop) of the shard holding a sample, or None."""
        rows = self.table("predictions", run_id=run_id, sample_ids=[sample_id], columns=["shard_id"]).to_pylist()
        if not rows:
            return None
        return self.run(run_id).shard_range(rows[0]["shard_id"])

    def _committed_filter(self, run_id: str | None):
        shards = self._read("shards", columns=["run_id", "shard_id"],
                            filter=None if run_id is None else pc.field("run_id") == run_id)
        by_run: dict[str, list[int]] = {}
        for r, s in zip(shards["run_id"].to_pylist(), shards["shard_id"].to_pylist()):
            by_run.setdefault(r, []).append(s)
        if not by_run:
            return pc.scalar(False)
        expression = None
        for r, ids in by_run.items():
            term = (pc.field("run_id") == r) & pc.field("shard_id").isin(ids)
            expression = term if expression is None else expression | term
        return expression

    # ------------------------------------------------------------------ SQL and maintenance
    def connect(self, *, memory_limit: str | None = None):
        """A DuckDB connection with read-only views runs, shards, predictions, explanations, errors, metrics,
        perturbation_curves, comparisons (see storage.store.sql). Close it when done: an open connection over
        Arrow datasets sometimes aborts the interpreter at exit (duckdb 2.0.1)."""
        from attn_audit.storage.store.sql import connect

        return self._reading_views(lambda: connect(self, memory_limit=memory_limit))

    def sql(self, query: str, *, timeout: float | None = None, memory_limit: str | None = None) -> pa.Table:
        """Run one read-only SQL statement (SELECT / WITH / DESCRIBE / SHOW / EXPLAIN) over the views, within
        `timeout` seconds (default none) and `memory_limit` ("4GB"; default half the memory)."""
        from attn_audit.storage.store.sql import run_query

        return self._reading_views(lambda: run_query(self, query, timeout=timeout, memory_limit=memory_limit))

    def _reading_views(self, call):
        """DuckDB stops at a missing data file in the middle of a query, with a long message: look first."""
        from attn_audit.storage.store.check import check_files

        check_files(self).raise_if_damaged()
        return call()

    def check(self, run_id: str | None = None) -> CheckReport:
        """What is damaged in the store, or in one run (id or prefix) plus table-wide damage: a CheckReport
        (storage.store.check). Cheap: counts come from the logs' file statistics, not from reading the rows."""
        from attn_audit.storage.store.check import check

        return check(self, None if run_id is None else self.run(run_id).run_id)

    def repair(self, run_id: str | None = None) -> CheckReport:
        """Make damaged tables readable and reset the shards whose rows were lost, so that the next `attn-audit
        explain` of their runs recomputes them; returns the check after the repair (storage.store.check)."""
        from attn_audit.storage.store.check import repair

        return repair(self, None if run_id is None else self.run(run_id).run_id)

    def optimize(self) -> dict[str, dict]:
        """Compact small files (one per shard commit) into large ones and checkpoint the logs. Readers keep
        working; old files stay until `vacuum`."""
        from attn_audit.storage.store.maintenance import optimize

        return optimize(self)

    def vacuum(self, retention_hours: int = 168, dry_run: bool = False) -> dict[str, list[str]]:
        """Delete files no longer referenced by the tables and older than `retention_hours` (default 7 days:
        readers of older versions keep working). Uncommitted files of crashed writers go too; with a short
        retention, so would the not-yet-committed files of a writer running now: vacuum below a few hours only
        when no writer is active."""
        return {name: self.delta(name).vacuum(retention_hours=retention_hours, dry_run=dry_run,
                                              enforce_retention_duration=False)
                for name in TABLES}

    def __repr__(self) -> str:
        return f"<Store {self.uri}>"


def open_store(location: str | Path, *, create: bool = False, storage_options: dict[str, str] | None = None) -> Store:
    return Store.open(location, create=create, storage_options=storage_options)


def _check_local_location(path: Path, create: bool) -> None:
    if path.exists() and not path.is_dir():
        raise StoreLocationError(f"{path} is a file, not a store folder; give a folder path (it will be created)")
    if not path.exists():
        if not create:
            raise StoreLocationError(f"no store at {path}; `attn-audit explain --store {path}` creates one")
        path.mkdir(parents=True, exist_ok=True)
        return
    if (path / "runs" / "_delta_log").is_dir():
        return
    foreign = [p.name for p in path.iterdir() if p.name not in TABLES]
    if foreign:
        raise StoreLocationError(f"{path} is not an attn-audit store and is not empty ({', '.join(sorted(foreign)[:5])}"
                                 "); give a new or empty folder")
    if not create:
        raise StoreLocationError(f"{path} is not an attn-audit store (no runs table)")


def _cast(name: str, rows: pa.Table) -> pa.Table:
    schema = TABLES[name].schema
    missing = [f.name for f in schema if f.name not in rows.column_names]
    if missing:
        raise StoreError(f"rows for {name} lack column(s) {missing}; the schema is {schema.names}")
    try:
        return rows.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise StoreError(f"rows for {name} do not fit its schema: {err}") from None


def _same_type(stored: pa.DataType, expected: pa.DataType) -> bool:
    def norm(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
            return pa.list_(norm(t.value_type))
        return t
    return norm(stored) == norm(expected)


def _round_to_float16(column: pa.ChunkedArray) -> pa.ChunkedArray:
    chunks = []
    for chunk in column.chunks:
        values = chunk.values.to_numpy(zero_copy_only=False).astype(np.float16).astype(np.float32)
        chunks.append(pa.ListArray.from_arrays(chunk.offsets, pa.array(values), mask=chunk.is_null()))
    return pa.chunked_array(chunks, type=column.type)


def _or_nan(value) -> float:
    return float("nan") if value is None else float(value)


def _sql_safe(value: str) -> str:
    if not all(c.isalnum() or c in "-_" for c in value):
        raise StoreError(f"bad run id {value!r}")
    return value
