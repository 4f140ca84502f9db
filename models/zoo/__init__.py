"""Built-in models: checkpoint folders shipped inside this package (`builtin:NAME`)."""

from __future__ import annotations

from pathlib import Path

from attn_audit.models.errors import ModelLoadError

ZOO_DIR = Path(__file__).parent


def _is_checkpoint(folder: Path) -> bool:
    return (folder / "config.json").is_file() or (folder / "attn_audit_head.json").is_file()


def available() -> list[str]:
    return sorted(p.name for p in ZOO_DIR.iterdir() if p.is_dir() and _is_checkpoint(p))


def builtin_path(name: str) -> Path:
    folder = ZOO_DIR / name
    if not _is_checkpoint(folder):
        names = ", ".join(available()) or "none installed"
        raise ModelLoadError(f"unknown built-in model {name!r}; available: {names}")
    return folder
