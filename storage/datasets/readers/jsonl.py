"""`jsonl:PATH`: one JSON object per line; rows are re-read by byte offset, so only ids stay in memory."""

from __future__ import annotations

import json

from attn_audit.storage.datasets.readers.tabular import Row, TabularDataset


class JsonlDataset(TabularDataset):
    """Blank lines are not rows. A line that is not a JSON object is a row whose reading fails."""

    scheme = "jsonl"

    def _scan(self) -> tuple[set[str], list[Row], list]:
        columns: set[str] = set()
        rows: list[Row] = []
        labels: list = []
        self._offsets: list[int] = []
        offset = 0
        with open(self.path, "rb") as lines:
            for number, line in enumerate(lines, start=1):
                start, offset = offset, offset + len(line)
                if not line.strip():
                    continue
                location = f"line {number}"
                self._offsets.append(start)
                record = _parse(line)
                if isinstance(record, str):
                    rows.append(Row(location, self.placeholder_id(location), record))
                    labels.append(None)
                    continue
                columns |= record.keys()
                rows.append(self.row_with_id(location, record.get("id")))
                labels.append(record.get("label"))
        return columns, rows, labels

    def _record(self, i: int) -> dict:
        with open(self.path, "rb") as lines:
            lines.seek(self._offsets[i])
            return json.loads(lines.readline())


def _parse(line: bytes) -> dict | str:
    """The line's object, or what is wrong with it."""
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return f"not valid JSON: {err}"
    return record if isinstance(record, dict) else f"expected a JSON object, got {type(record).__name__}"
