"""The explanation store: Delta Lake tables with provenance, one commit per shard, and a read API.

Atomicity across tables: a shard writes its rows into `explanations`, `predictions` and `errors` (one Delta
commit each), then its marker row into `shards`. Every commit carries the Delta application transaction
`attn-audit:<run_id>:shard:<shard_id>`; a table that already holds that transaction is skipped, so re-committing
a shard is a no-op and a commit interrupted half-way is completed, never duplicated, by the next attempt.
Readers (this API and the DuckDB views) only see rows whose (run_id, shard_id) has a marker, so a shard is
visible in all tables at once or in none.

`Store` is one class made of its parts: opening (storage.store.migration), writing (storage.store.committer),
reading (storage.store.reader); here are the table access they share, SQL, checks and maintenance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.dataset as pads
from attn_audit.storage.store import migration
from attn_audit.storage.store.committer import Committer
from attn_audit.storage.store.errors import StoreDamagedError, first_line
from attn_audit.storage.store.layout import TABLES
from attn_audit.storage.store.paths import is_remote, local_store_path
from attn_audit.storage.store.reader import Reader
from attn_audit.storage.store.records import RunInfo
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

if TYPE_CHECKING:
    from attn_audit.storage.store.check import CheckReport


def read_files(table: DeltaTable, run_ids: Iterable[str] | None = None, keep: Callable[[str], bool] | None = None,
               **scan) -> pa.Table:
    """Rows of the snapshot `table`: of the partitions of `run_ids` only (None: every run; the others' files
    are not even listed), of the files whose log path `keep` accepts (None: all); `scan`: columns, filter."""
    pruning = None if run_ids is None else [("run_id", "in", sorted(set(run_ids)))]
    dataset = table.to_pyarrow_dataset(file_pruning_predicate=pruning)
    if keep is not None:
        fragments = [f for f in dataset.get_fragments() if keep(unquote(f.path))]
        dataset = pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
    return dataset.to_table(**scan)


class Store(Reader, Committer):
    """A folder (or object-store prefix) of Delta tables. Cheap to create; holds no open handles, so one
    object can be used from many threads and many processes can open the same store."""

    def __init__(self, uri: str, storage_options: dict[str, str] | None = None):
        self.uri = uri
        self.storage_options = storage_options or None
        self._runs_cache: dict[str, RunInfo] = {}  # what commits check their run against

    @classmethod
    def open(cls, location: str | Path, *, create: bool = False,
             storage_options: dict[str, str] | None = None, strict: bool = True) -> Store:
        """Open the store at a local path or a URI (s3://, gs://, az://, file://). `create=True` makes the
        tables that are missing; otherwise a location with no store is an error. A damaged store (a table lost,
        a log unreadable) raises StoreDamagedError; `strict=False` opens it anyway, for `check()` / `repair()`."""
        uri = str(location)
        if not is_remote(uri):
            path = local_store_path(uri)
            migration.check_local_location(path, create)
            uri = str(path)
        store = cls(uri.rstrip("/"), storage_options)
        try:
            if create:
                migration.create_missing_tables(store)
            migration.check_tables(store, create)
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
        """`read_files` of table `name` (of snapshot `table` when given); StoreDamagedError when a data file is
        missing or unreadable."""
        try:
            return read_files(self.delta(name) if table is None else table, **scan)
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
