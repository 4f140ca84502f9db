"""The store's tables: names, schemas, partitioning, and the schema version written into each table."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow as pa
from attn_audit.storage import tables

SCHEMA_VERSION = 1  # bump on any change a reader of version N cannot read
FORMAT = "attn-audit-store"


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    partition_by: tuple[str, ...]
    gated: bool  # rows are visible only once their shard's marker is in `shards`


TABLES: dict[str, TableSpec] = {spec.name: spec for spec in (
    TableSpec("shards", tables.SHARDS, ("run_id",), False),
    TableSpec("predictions", tables.PREDICTIONS, ("run_id",), True),
    TableSpec("explanations", tables.EXPLANATIONS, ("run_id", "method"), True),
    TableSpec("errors", tables.ERRORS, ("run_id",), True),
    TableSpec("map_sums", tables.MAP_SUMS, ("run_id",), True),
    TableSpec("metrics", tables.METRICS, ("run_id",), False),
    TableSpec("perturbation_curves", tables.PERTURBATION_CURVES, ("run_id",), False),
    TableSpec("comparisons", tables.COMPARISONS, ("run_id",), False),
    TableSpec("runs", tables.RUNS, ("run_id",), False),  # created last: its presence marks a complete store
)}
VIEW_NAMES = ("runs", "shards", "predictions", "explanations", "errors", "map_sums", "metrics", "perturbation_curves",
              "comparisons")
# tables that stores written before them lack: created empty when such a store is opened (additive, same schema
# version, so older stores keep working)
ADDED_TABLES = ("comparisons", "map_sums")
# nullable columns appended to a table after stores were written with it: added to such a store's table when it
# is opened (a metadata-only commit; older rows read them as null), so older stores keep working
ADDED_COLUMNS = {"predictions": ("target_detail",)}
APPEND_TABLES = ("metrics", "perturbation_curves", "comparisons")  # written by downstream jobs with append()
SHARD_TABLES = ("explanations", "predictions", "errors", "map_sums")  # written by a shard commit, before its marker


def description(name: str) -> str:
    """Stored as the Delta table's description: how a reader recognises the table and its version."""
    return json.dumps({"format": FORMAT, "table": name, "schema_version": SCHEMA_VERSION})


def parse_description(text: str | None) -> dict | None:
    try:
        info = json.loads(text or "")
    except ValueError:
        return None
    return info if isinstance(info, dict) and info.get("format") == FORMAT else None
