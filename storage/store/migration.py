"""Opening a store: the location checks, creating the tables of a new store and those (or columns) added since an
existing one was written, and refusing tables of another schema version. Nothing here is ever created over
damage: a lost table of an existing store is an error, not a new empty table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
from attn_audit.storage.store.errors import SchemaVersionError, StoreLocationError
from attn_audit.storage.store.layout import (
    ADDED_COLUMNS,
    ADDED_TABLES,
    SCHEMA_VERSION,
    TABLES,
    description,
    parse_description,
)
from attn_audit.storage.store.paths import is_remote
from deltalake import DeltaTable, Field
from deltalake.exceptions import DeltaError

if TYPE_CHECKING:
    from attn_audit.storage.store.store import Store


def check_local_location(path: Path, create: bool) -> None:
    """A local folder that is a store, or (with `create`) a new or empty one, created here."""
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


def table_exists(store: Store, name: str) -> bool:
    return DeltaTable.is_deltatable(store.table_uri(name), storage_options=store.storage_options)


def create_missing_tables(store: Store) -> None:
    """Create the tables of a new store, and in an existing one those added since it was written
    (ADDED_TABLES). Never one that existed: a missing table of an existing store, or a table folder holding
    data files but no log, is damage (StoreDamagedError), not something to start again empty."""
    existing_store = table_exists(store, "runs")  # created last
    for name in TABLES:
        if table_exists(store, name):
            continue
        if (existing_store and name not in ADDED_TABLES) or data_files(store, name):
            raise store._damaged(name)
        create_table(store, name)


def create_table(store: Store, name: str) -> None:
    spec = TABLES[name]
    try:
        DeltaTable.create(store.table_uri(name), spec.schema, mode="ignore", partition_by=list(spec.partition_by),
                          name=name, description=description(name), storage_options=store.storage_options)
    except (DeltaError, OSError):  # another process created it at the same moment
        if not table_exists(store, name):
            raise


def data_files(store: Store, name: str) -> list[Path]:
    """The Parquet files in a local table's folder, referenced or not (object stores are not listed)."""
    if is_remote(store.uri):
        return []
    return [p for p in Path(store.table_uri(name)).rglob("*.parquet") if "_delta_log" not in p.parts]


def check_tables(store: Store, create: bool) -> None:
    """Every table present (those added since created), of this schema version and with the expected columns."""
    if not table_exists(store, "runs"):
        raise StoreLocationError(f"{store.uri} is not an attn-audit store (no runs table)"
                                 + ("" if create else "; `attn-audit explain --store` creates one"))
    if not all(table_exists(store, name) for name in TABLES):  # a store written before ADDED_TABLES, or damage
        create_missing_tables(store)
    _add_missing_columns(store)
    for name, spec in TABLES.items():
        table = store.delta(name)
        info = parse_description(table.metadata().description)
        if info is None:
            raise StoreLocationError(f"{store.table_uri(name)} is a Delta table that attn-audit did not write")
        version = info.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{store.uri} was written by a newer attn-audit (store schema {version}; this version reads "
                f"schema {SCHEMA_VERSION}); upgrade attn-audit to read it")
        if version < SCHEMA_VERSION:
            raise SchemaVersionError(f"{store.uri} has store schema {version}, which this version "
                                     f"(schema {SCHEMA_VERSION}) cannot read; re-run the audits into a new store")
        stored = pa.schema(table.schema().to_arrow())
        for field in spec.schema:
            if field.name not in stored.names or not _same_type(stored.field(field.name).type, field.type):
                raise SchemaVersionError(
                    f"table '{name}' of {store.uri} has an incompatible schema (column {field.name!r}: "
                    f"{stored.field(field.name).type if field.name in stored.names else 'missing'}, "
                    f"expected {field.type})")


def _add_missing_columns(store: Store) -> None:
    for name, columns in ADDED_COLUMNS.items():
        table = store.delta(name)
        missing = [c for c in columns if c not in table.schema().to_arrow().names]
        if not missing:
            continue
        try:
            table.alter.add_columns([Field.from_arrow(TABLES[name].schema.field(c)) for c in missing])
        except (DeltaError, OSError):  # another process added them at the same moment
            if any(c not in store.delta(name).schema().to_arrow().names for c in missing):
                raise


def _same_type(stored: pa.DataType, expected: pa.DataType) -> bool:
    def norm(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t) or pa.types.is_string_view(t):
            return pa.string()
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
            return pa.list_(norm(t.value_type))
        return t
    return norm(stored) == norm(expected)
