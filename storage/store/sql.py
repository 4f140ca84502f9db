"""SQL over the store with DuckDB: read-only views, offline (no extension is installed or loaded).

Views: runs, shards, predictions, explanations, errors, metrics, perturbation_curves, comparisons. predictions,
explanations and errors only show rows of committed shards: files whose statistics show only committed
shards are read as they are, other files through a semi-join on `shards`.

Local stores are read with DuckDB's own Parquet reader over the exact file list of each table's current
Delta snapshot (about twice as fast as going through Arrow); remote stores (s3://, gs://, ...) through
`DeltaTable.to_pyarrow_dataset()`, which uses deltalake's object-store filesystem. Either way the connection
is locked down before any user SQL runs: no file system access beyond those files, no extensions, and the
configuration cannot be changed back; only SELECT-like statements are accepted at all.
"""

from __future__ import annotations

from urllib.parse import unquote

import duckdb
import pyarrow as pa

from storage.store.errors import QueryError
from storage.store.layout import ADDED_COLUMNS, TABLES, VIEW_NAMES

READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}  # DESCRIBE, SHOW, SUMMARIZE, VALUES, FROM-first parse as SELECT


def connect(store, *, native_parquet: bool | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    allowed: list[str] = []
    shards = store.delta("shards")  # markers first, then the data they gate: a marker implies its rows
    committed: dict[str, set[int]] = {}
    for row in shards.to_pyarrow_dataset().to_table(columns=["run_id", "shard_id"]).to_pylist():
        committed.setdefault(row["run_id"], set()).add(row["shard_id"])
    tables = {"shards": shards, **{name: store.delta(name) for name in TABLES if name != "shards"}}
    for name, table in tables.items():
        spec = TABLES[name]
        columns = ", ".join(f'"{c}"' for c in spec.schema.names)
        gate = ("SEMI JOIN _shards s ON x.run_id = s.run_id AND x.shard_id = s.shard_id" if spec.gated else "")
        view = "_shards" if name == "shards" else name
        if _use_native(store, table, native_parquet):
            clean, mixed = _split_files(store, table, name, committed) if spec.gated else (table.file_uris(), [])
            if name in ADDED_COLUMNS:  # files written before those columns lack them: read as NULL
                con.register(f"_schema_{name}", spec.schema.empty_table())
            parts = [f"SELECT {columns} FROM {_read_parquet(clean, spec)}"] if clean else []
            if mixed:  # files holding rows of uncommitted shards (crashed writers, compacted together)
                parts.append(f"SELECT x.* FROM (SELECT {columns} FROM {_read_parquet(mixed, spec)}) x {gate}")
            allowed += clean + mixed
            if parts:
                con.execute(f"CREATE VIEW {view} AS " + " UNION ALL ".join(parts))
                continue
            source = spec.schema.empty_table()  # nothing visible; the empty table carries the schema
        else:
            source = table.to_pyarrow_dataset()
        con.register(f"_arrow_{name}", source)
        con.execute(f"CREATE VIEW {view} AS SELECT x.* FROM (SELECT {columns} FROM _arrow_{name}) x {gate}")
    con.execute("CREATE VIEW shards AS SELECT * FROM _shards")
    if allowed:
        con.execute("SET allowed_paths = $paths", {"paths": allowed})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_query(store, query: str, *, native_parquet: bool | None = None) -> pa.Table:
    """Run one read-only statement and return its result as Arrow; QueryError for anything else."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("empty SQL query")
    con = connect(store, native_parquet=native_parquet)
    try:
        try:
            statements = con.extract_statements(query)
        except duckdb.Error as err:
            raise QueryError(f"SQL syntax error: {_first_lines(err)}") from None
        if len(statements) != 1:
            raise QueryError(f"give exactly one SQL statement (got {len(statements)})")
        kind = statements[0].type.name
        if kind not in READ_ONLY_TYPES:
            raise QueryError(f"the store is read-only here: {kind} statements are refused; use SELECT "
                             "(or WITH / DESCRIBE / SHOW / EXPLAIN)")
        try:
            return con.sql(query).to_arrow_table()
        except duckdb.Error as err:
            raise QueryError(f"{_first_lines(err)}\n(views: {', '.join(VIEW_NAMES)})") from None
    finally:
        con.close()


def _use_native(store, table, native_parquet: bool | None) -> bool:
    if native_parquet is False or store.uri.count("://"):
        return False
    protocol = table.protocol()
    if protocol.reader_features or protocol.min_reader_version > 1:  # deletion vectors, column mapping, ...
        return False
    return "=" not in store.uri  # a key=value folder above the store would confuse hive partition parsing


def _split_files(store, table, name: str, committed: dict[str, set[int]]) -> tuple[list[str], list[str]]:
    """A gated table's data files: (every row committed, some rows maybe not), from the file statistics
    (each shard commit writes files of one shard; compaction may merge shards). Files of uncommitted shards
    only are left out altogether."""
    root = store.table_uri(name)
    by_relative = {uri[len(root) + 1:]: uri for uri in table.file_uris()}
    actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
    clean, mixed = [], []
    for action in actions:
        uri = by_relative.get(unquote(action["path"]))
        if uri is None:  # unexpected path form: gate every row instead
            return [], list(by_relative.values())
        lo, hi, run = action.get("min.shard_id"), action.get("max.shard_id"), action.get("partition.run_id")
        done = committed.get(run, set())
        if lo is None or hi is None:
            mixed.append(uri)
        elif all(s in done for s in range(lo, hi + 1)):
            clean.append(uri)
        elif any(s in done for s in range(lo, hi + 1)):
            mixed.append(uri)
    return clean, mixed


def _read_parquet(files: list[str], spec) -> str:
    hive_types = ", ".join(f"'{c}': VARCHAR" for c in spec.partition_by)
    listed = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
    files = (f"read_parquet([{listed}], hive_partitioning = true, hive_types = {{{hive_types}}}, "
             "hive_types_autocast = false, union_by_name = true)")
    if spec.name in ADDED_COLUMNS:
        return f"(SELECT * FROM {files} UNION ALL BY NAME SELECT * FROM _schema_{spec.name})"
    return files


def _first_lines(err: Exception, n: int = 3) -> str:
    return "\n".join(str(err).strip().splitlines()[:n])
