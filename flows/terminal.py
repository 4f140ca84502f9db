"""Text from users, datasets and stores, made safe to print with Rich.

Rich reads `[...]` in printed strings as markup (a sample id `[/x]` raises MarkupError, a path `br[red]`
prints as `br` in red) and passes control characters through (an id holding `\\x1b[2J` clears the
terminal). `literal()` every such value before it goes into a printed string or a table cell.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that reorder what is shown
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def literal(value: object) -> str:
    """`str(value)` to print as it is: markup escaped, control characters shown as `\\xNN` / `\\uNNNN`."""
    shown = _CONTROL.sub(lambda m: ascii(m.group())[1:-1], str(value))
    # the space stops escape() doubling a final backslash (it would print twice unless a tag follows)
    return escape(shown + " ")[:-1]
