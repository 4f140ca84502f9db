"""`csv:PATH`: a header row, then one row per sample; cells are text, converted by column."""

from __future__ import annotations

import csv
import json
import re

from storage.datasets.errors import DatasetError
from storage.datasets.readers.cells import RowProblem
from storage.datasets.readers.tabular import Row, TabularDataset

_INTEGER = re.compile(r"-?\d+")


class CsvDataset(TabularDataset):
    """UTF-8 (a byte-order mark is allowed). An empty cell is a missing value. Labels are integers when
    every non-empty label is one, else strings. `gt_text_tokens` is a JSON list ("[3, 4]"), `region_features` /
    `region_boxes` JSON lists of lists;
    `gt_image_mask` is a JSON list of lists or a mask image path.
    """

    scheme = "csv"

    def _scan(self) -> tuple[set[str], list[Row], list]:
        self._header, self._cells, locations = self._read()
        if len(set(self._header)) != len(self._header):
            raise DatasetError(f"{self.path}: repeated column names in the header {self._header}")
        rows: list[Row] = []
        labels: list = []
        for cells, location in zip(self._cells, locations, strict=True):
            if len(cells) != len(self._header):
                rows.append(Row(location, self.placeholder_id(location),
                                f"has {len(cells)} fields, the header has {len(self._header)}"))
                labels.append(None)
                continue
            record = dict(zip(self._header, cells, strict=True))
            rows.append(self.row_with_id(location, record.get("id")))
            labels.append(record.get("label") or None)
        self._integer_labels = all(_INTEGER.fullmatch(v) for v in labels if v is not None)
        if self._integer_labels:
            labels = [None if v is None else int(v) for v in labels]
        return set(self._header), rows, labels

    def _read(self) -> tuple[list[str], list[list[str]], list[str]]:
        cells, locations = [], []
        with open(self.path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                header = [name.strip() for name in next(reader, [])]
                next_line = reader.line_num + 1
                for row in reader:
                    if row:  # an empty line holds no row
                        cells.append(row)
                        locations.append(f"line {next_line}")
                    next_line = reader.line_num + 1
            except (csv.Error, UnicodeDecodeError) as err:
                raise DatasetError(f"{self.path}: cannot read as UTF-8 CSV near line {reader.line_num + 1}: "
                                   f"{err}") from None
        if not header:
            raise DatasetError(f"{self.path}: no header row")
        return header, cells, locations

    def _record(self, i: int) -> dict:
        cells = self._cells[i]  # rows with the wrong field count never get here (their Row has a problem)
        record = {name: cell or None for name, cell in zip(self._header, cells, strict=True)}
        if record.get("label") is not None and self._integer_labels:
            record["label"] = int(record["label"])
        for column in ("gt_text_tokens", "region_features", "region_boxes"):
            if record.get(column) is not None:
                record[column] = _json_cell(record[column], column)
        mask = record.get("gt_image_mask")
        if mask is not None and mask.lstrip().startswith("["):
            record["gt_image_mask"] = _json_cell(mask, "gt_image_mask")
        return record


def _json_cell(text: str, column: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RowProblem(f"{column} is not valid JSON: {err}") from None
