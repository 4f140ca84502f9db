"""`csv:PATH`: a header row, then one row per sample; cells are text, converted by column."""

from __future__ import annotations

import csv
import itertools
import json
import re

from attn_audit.storage.datasets.errors import DatasetError
from attn_audit.storage.datasets.readers.cells import RowProblem
from attn_audit.storage.datasets.readers.tabular import Row, TabularDataset

_INTEGER = re.compile(r"-?\d+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


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
        rows = self._rows()
        if not rows:
            raise DatasetError(f"{self.path}: no header row")
        header = [name.strip() for name in rows[0][1]]
        return header, [cells for _, cells in rows[1:]], [f"line {line}" for line, _ in rows[1:]]

    def _rows(self) -> list[tuple[int, list[str]]]:
        """(the line it starts on, its cells) for each row that is not an empty line.

        csv ends a quoted field that is never closed at the end of the file, without a word, with the rest of
        the file inside it. A lone quote read after the last line tells: it closes such a field, else it is a
        row of its own (the last one, on a line of its own)."""
        rows: list[tuple[int, list[str]]] = []
        with open(self.path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(itertools.chain(handle, ['"']))
            start = 1
            try:
                for cells in reader:
                    if cells:  # an empty line holds no row
                        rows.append((start, cells))
                    start = reader.line_num + 1
            except (csv.Error, UnicodeDecodeError) as err:
                raise DatasetError(f"{self.path}: cannot read as UTF-8 CSV near line {reader.line_num + 1}: "
                                   f"{err}") from None
        last_start, last_cells = rows.pop()
        if last_start != reader.line_num:
            # The open cell runs from its quote to the file's last line (reader.line_num counts the probe's).
            cell = last_cells[-1]
            opened = reader.line_num - 1 - (len(_LINE_BREAK.findall(cell)) - cell.endswith(("\n", "\r")))
            raise DatasetError(f"{self.path}: the quote opened on line {opened} is never closed, so the rest of "
                               'the file would be one cell; close it (a quote inside a quoted cell is written "")')
        return rows

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
