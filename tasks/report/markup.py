"""HTML tables for the report's sections."""

from __future__ import annotations

import html


def table(header, rows, classes=None) -> str:
    """A table of escaped cells; `classes[i]` (optional) is the CSS class of row i."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        css = f" class='{classes[i]}'" if classes and classes[i] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"
