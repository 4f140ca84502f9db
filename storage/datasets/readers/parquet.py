"""`parquet:PATH`: column types are checked once at open; rows are read a row group at a time."""

from __future__ import annotations

import bisect

import pyarrow as pa
import pyarrow.parquet as pq
from attn_audit.storage.datasets.errors import DatasetError
from attn_audit.storage.datasets.readers.cells import GROUND_TRUTH_COLUMNS, MODALITY_COLUMNS
from attn_audit.storage.datasets.readers.tabular import Row, TabularDataset

# Arrow type kinds each known column accepts (see `_kind`).
ACCEPTED_KINDS = {
    "id": {"string", "integer"},
    "text": {"string"},
    "image": {"string", "binary", "image struct"},
    "label": {"string", "integer"},
    "gt_text_tokens": {"integer list"},
    "gt_image_mask": {"string", "binary", "integer grid"},
}
KNOWN_COLUMNS = ["id", *MODALITY_COLUMNS, "label", *GROUND_TRUTH_COLUMNS]


class ParquetDataset(TabularDataset):
    """`image` may hold paths, encoded bytes, or Hugging Face `datasets` image structs {bytes, path}.
    Rows are located as "row index N", 0-based.
    """

    scheme = "parquet"

    def _scan(self) -> tuple[set[str], list[Row], list]:
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as err:
            raise DatasetError(f"{self.path}: cannot read as Parquet: {err}") from None
        schema = self._file.schema_arrow
        for column in set(KNOWN_COLUMNS) & set(schema.names):
            kind = _kind(schema.field(column).type)
            if kind not in ACCEPTED_KINDS[column]:
                raise DatasetError(f"{self.path}: column {column!r} has type {schema.field(column).type}; "
                                   f"accepted: {sorted(ACCEPTED_KINDS[column])}")
        self._read_columns = [c for c in KNOWN_COLUMNS if c in schema.names]
        ids = (self._file.read(columns=["id"]).column("id").to_pylist() if "id" in schema.names
               else [None] * self._file.metadata.num_rows)  # refused as a missing column after the scan
        labels = (self._file.read(columns=["label"]).column("label").to_pylist()
                  if "label" in schema.names else [None] * len(ids))
        sizes = [self._file.metadata.row_group(g).num_rows for g in range(self._file.num_row_groups)]
        self._group_starts = [sum(sizes[:g]) for g in range(len(sizes))]
        self._cached_group: tuple[int, pa.Table] | None = None
        rows = [self.row_with_id(f"row index {k}", raw_id) for k, raw_id in enumerate(ids)]
        return set(schema.names), rows, labels

    def _record(self, i: int) -> dict:
        group = bisect.bisect_right(self._group_starts, i) - 1
        if self._cached_group is None or self._cached_group[0] != group:
            # Consecutive positions (a shard) mostly fall in the same row group: keep the last one.
            self._cached_group = (group, self._file.read_row_group(group, columns=self._read_columns))
        return self._cached_group[1].slice(i - self._group_starts[group], 1).to_pylist()[0]


def _kind(arrow_type: pa.DataType) -> str:
    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "string"
    if pa.types.is_integer(arrow_type):
        return "integer"
    if pa.types.is_binary(arrow_type) or pa.types.is_large_binary(arrow_type):
        return "binary"
    if pa.types.is_struct(arrow_type) and {f.name for f in arrow_type} == {"bytes", "path"}:
        return "image struct"
    if _is_list(arrow_type):
        inner = arrow_type.value_type
        if pa.types.is_integer(inner):
            return "integer list"
        if _is_list(inner) and (pa.types.is_integer(inner.value_type)
                                or pa.types.is_boolean(inner.value_type)):
            return "integer grid"
    return str(arrow_type)


def _is_list(arrow_type: pa.DataType) -> bool:
    return pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)
