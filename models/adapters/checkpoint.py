"""What an adapter may read from the folder its model was loaded from (when `load` gave it no resource)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from attn_audit.models.images import PixelTransform


def checkpoint_folder(model: torch.nn.Module) -> Path | None:
    """The local folder `from_pretrained` read the model from; None for a model built in memory."""
    path = str(getattr(model, "name_or_path", "") or "")
    return Path(path) if path and Path(path).is_dir() else None


def pixel_transform(model: torch.nn.Module, image_size: int | None, channels: int) -> PixelTransform:
    """The checkpoint's pixel transform; `image_size` None: the folder's preprocessor_config.json `size`."""
    folder = checkpoint_folder(model)
    if image_size is None:
        spec = folder / "preprocessor_config.json" if folder else None
        size = json.loads(spec.read_text()).get("size") if spec and spec.is_file() else None
        if not isinstance(size, int):
            raise ValueError(f"{type(model).__name__} takes any image size: give wrap(..., transform=PixelTransform"
                             "(...)) or a preprocessor_config.json with an integer 'size' in its checkpoint folder")
        image_size = size
    return PixelTransform.for_checkpoint(SimpleNamespace(image_size=image_size, num_channels=channels), folder)
