"""Every Python block of the README runs verbatim, top to bottom in one namespace (as a reader pastes them), on the
built-in models and data: the API examples, the captioner's, and the in-process audit (real Prefect, Ray, store;
its relative paths land in a temporary folder)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", text, re.S | re.M)


def test_every_readme_python_block_runs(ray_cluster, prefect_api, tmp_path, monkeypatch):
    blocks = python_blocks(README.read_text())
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102 — our own README
    assert namespace["summary"].status == "completed"
    assert (tmp_path / "out" / "store").is_dir()
