"""Provenance of a run: fingerprints of the model's files, the code version, and the deterministic run key."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path

CHUNK = 8 << 20


def fingerprint_files(paths: Iterable[str | Path]) -> str:
    """sha256 over files' names and contents; independent of where the files live and of their order.

    The flow layer decides which files make a model (its `*.safetensors`, config, a pooling head's encoder);
    this function only hashes. Raises FileNotFoundError naming a missing file.
    """
    entries = []
    for path in {Path(p) for p in paths}:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while block := handle.read(CHUNK):
                digest.update(block)
        entries.append((path.name, path.stat().st_size, digest.hexdigest()))
    if not entries:
        raise ValueError("fingerprint_files needs at least one file")
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()


def fingerprint_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def canonical_json(value) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_key(model_fingerprint: str, dataset_fingerprint: str, methods: Iterable[str], config: dict) -> str:
    """The run id: the same model + data + methods + config always give the same 16 hex digits."""
    key = canonical_json({"model": model_fingerprint, "data": dataset_fingerprint,
                          "methods": sorted(set(methods)), "config": config})
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def code_version() -> str:
    """`attn-audit 0.1.0` plus `+git.<commit>` (and `.dirty`) when the code runs from a git checkout."""
    try:
        version = metadata.version("attn-audit")
    except metadata.PackageNotFoundError:
        version = "unknown"
    text = f"attn-audit {version}"
    root = Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        return text
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return text
    return f"{text}+git.{commit[:12]}" + (".dirty" if dirty else "")
