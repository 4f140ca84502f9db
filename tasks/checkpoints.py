"""The checkpoints in a watched folder: its sub-folders that hold a complete checkpoint, in training order.

A checkpoint folder has a `config.json` (or a pooling head's `attn_audit_head.json`) and `*.safetensors` weights.
A folder still being written is left for the next look: hidden folders (`.name`, the place to write a checkpoint
before renaming it into view) and folders whose safetensors files are shorter than their header says.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

CONFIGS = ("config.json", "attn_audit_head.json")


def checkpoint_folders(folder: str | Path) -> list[Path]:
    """Complete checkpoint sub-folders of `folder`, natural order of names (`step-9` before `step-10`)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"no checkpoint folder {root}")
    found = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_complete(p)]
    return sorted(found, key=lambda p: _natural(p.name))


def is_complete(folder: Path) -> bool:
    weights = list(folder.glob("*.safetensors"))
    return any((folder / c).is_file() for c in CONFIGS) and bool(weights) and all(map(_whole, weights))


def _whole(path: Path) -> bool:
    """A safetensors file is 8 bytes of header length, the JSON header, then the tensors' bytes; it is whole
    when it is as long as its header's largest data offset says."""
    try:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
    except (OSError, struct.error, ValueError):
        return False
    ends = [t["data_offsets"][1] for name, t in header.items() if name != "__metadata__"]
    return path.stat().st_size == 8 + length + max(ends, default=0)


def _natural(name: str) -> list:
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part]
