"""What the jsonl, csv and parquet readers share: the column schema, row errors, ids, labels."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from attn_audit.storage.datasets.base import MODALITY_ORDER, Dataset, content_fingerprint
from attn_audit.storage.datasets.errors import DatasetError, SampleError
from attn_audit.storage.datasets.readers.cells import (
    GROUND_TRUTH_COLUMNS,
    MODALITY_COLUMNS,
    RowProblem,
    build_sample,
    id_value,
)


@dataclass(frozen=True)
class Row:
    """What opening learnt about one row: where it is, its id, and any problem found already."""

    location: str  # "line 7" (1-based line of the file) or "row index 3" (0-based)
    id: str  # the row's id; for a row without a usable id, "<file name>:<line or row index>"
    problem: str | None = None


class TabularDataset(Dataset):
    """Rows of a table file. Columns: `id` (required), `image` and/or `text` (at least one), `label`,
    `gt_text_tokens`, `gt_image_mask`. Opening reads every id (duplicates are refused, naming them);
    reading a row validates its cells and raises SampleError naming the file, the row and the id.
    """

    scheme: ClassVar[str]

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        if not self.path.is_file():
            raise DatasetError(f"{self.scheme}: no such file: {self.path}")
        self.ref = f"{self.scheme}:{self.path}"
        self.name = self.path.name
        self._fingerprint: str | None = None
        self.columns, self._rows, labels = self._scan()
        if not self._rows:
            raise DatasetError(f"{self.path}: no rows")
        self._check_columns()
        self.modalities = tuple(m for m in MODALITY_ORDER if m in self.columns)
        self.label_names = self._label_names(labels)
        self._label_values = {v for v in labels if v is not None}
        _refuse_duplicates(self._rows, self.name)

    @abstractmethod
    def _scan(self) -> tuple[set[str], list[Row], list]:
        """(column names, one Row per data row, the raw label of each row or None)."""

    @abstractmethod
    def _record(self, i: int) -> dict:
        """Row i as {column: JSON-like value}; raises RowProblem for a cell the format cannot convert."""

    def __len__(self) -> int:
        return len(self._rows)

    def __reduce__(self):
        return type(self), (self.path,)  # re-opened on unpickling: no file handles or row caches travel

    def _sample_id(self, i: int) -> str:
        return self._rows[i].id

    def label_values(self) -> set[int | str]:
        return set(self._label_values)

    def _sample(self, i: int) -> dict:
        row = self._rows[i]
        try:
            if row.problem:
                raise RowProblem(row.problem)
            return build_sample(self._record(i), row.id, self.columns, self.path.parent)
        except RowProblem as problem:
            raise SampleError(row.id, f"{self.name} {row.location}, id {row.id!r}: {problem}") from None

    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = content_fingerprint(self)
        return self._fingerprint

    def placeholder_id(self, location: str) -> str:
        return f"{self.name}:{location.rsplit(' ', 1)[-1]}"

    def row_with_id(self, location: str, raw_id) -> Row:
        """A Row whose id problem (missing, empty, wrong type) is kept for `__getitem__` to raise."""
        try:
            return Row(location, id_value(raw_id))
        except RowProblem as problem:
            return Row(location, self.placeholder_id(location), str(problem))

    def _check_columns(self) -> None:
        if "id" not in self.columns:
            raise DatasetError(f"{self.path}: no 'id' column (columns: {sorted(self.columns)})")
        if not self.columns & set(MODALITY_COLUMNS):
            raise DatasetError(f"{self.path}: needs an 'image' or a 'text' column "
                               f"(columns: {sorted(self.columns)})")
        unknown = sorted(c for c in self.columns if c.startswith("gt_") and c not in GROUND_TRUTH_COLUMNS)
        if unknown:
            raise DatasetError(f"{self.path}: unknown ground-truth columns {unknown}; "
                               f"supported: {sorted(GROUND_TRUTH_COLUMNS)}")

    def _label_names(self, labels: list) -> list[str] | None:
        """Sorted names when labels are strings; None for integer labels (class indices) or no labels."""
        strings = {v for v in labels if isinstance(v, str)}
        integers = [v for v in labels if isinstance(v, int) and not isinstance(v, bool)]
        if strings and integers:
            raise DatasetError(f"{self.path}: the label column mixes integers ({integers[0]!r}) and strings "
                               f"({min(strings)!r}); use one type")
        return sorted(strings) or None


def _refuse_duplicates(rows: list[Row], file_name: str) -> None:
    where: dict[str, list[str]] = {}
    for row in rows:
        where.setdefault(row.id, []).append(row.location)
    duplicates = {i: locs for i, locs in where.items() if len(locs) > 1}
    if duplicates:
        shown = "; ".join(f"{i!r} at {', '.join(locs)}" for i, locs in list(duplicates.items())[:5])
        more = f" (and {len(duplicates) - 5} more)" if len(duplicates) > 5 else ""
        raise DatasetError(f"{file_name}: {len(duplicates)} duplicate ids: {shown}{more}")
