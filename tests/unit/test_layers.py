"""The package's layout: every module imports attn-audit's layers through the `attn_audit` namespace (never as
top-level `models`, `tasks`, `flows`, `storage`, names a user's own folders take), and each layer imports only the
layers below it: flows → tasks → models → storage."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("storage", "models", "tasks", "flows")  # bottom up
OWN = ("attn_audit", *LAYERS)


def python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def imported(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + ([f"{node.module}.{a.name}" for a in node.names] if node.module == "attn_audit"
                                      else [])
    return names


@pytest.mark.parametrize("path", python_files("attn_audit", *LAYERS, "tests", "scripts", "bench", "deploy"),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_layers_are_imported_through_the_namespace_and_only_downwards(path):
    names = imported(path)
    assert not [n for n in names if n.split(".")[0] in LAYERS], "import attn_audit.<layer>, not <layer>"
    top = path.relative_to(ROOT).parts[0]
    if top in LAYERS:
        above = LAYERS[LAYERS.index(top) + 1:]
        used = {n.split(".")[1] for n in names if n.startswith("attn_audit.") and n.count(".") >= 1}
        assert not used & set(above), f"{top} must not import {sorted(used & set(above))}"
