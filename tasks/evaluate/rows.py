"""Rows for the store's `metrics` and `perturbation_curves` tables, collected column-wise."""

from __future__ import annotations

import json

import pyarrow as pa
from attn_audit.storage.tables import METRICS, PERTURBATION_CURVES


class Rows:
    """Append dicts of one table's columns (run_id is filled in by `table`)."""

    def __init__(self, schema: pa.Schema):
        self.schema = schema
        self.columns: dict[str, list] = {name: [] for name in schema.names}

    def add(self, **values) -> None:
        if "details" in values and not isinstance(values["details"], str | None):
            values["details"] = json.dumps(values["details"], sort_keys=True)
        for name, column in self.columns.items():
            if name != "run_id":
                column.append(values.get(name))

    def __len__(self) -> int:
        return len(self.columns["method"])

    def table(self, run_id: str) -> pa.Table:
        columns = {**self.columns, "run_id": [run_id] * len(self)}
        return pa.Table.from_pydict(columns, schema=self.schema)


def metric_rows() -> Rows:
    return Rows(METRICS)


def curve_rows() -> Rows:
    return Rows(PERTURBATION_CURVES)
