"""Image decoding and the checkpoint's pixel transform, with numpy + PIL only (no torchvision)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.errors import SampleError


def decode_image(value, sample_id: str) -> Image.Image:
    """A PIL image from a PIL image, a numpy array, encoded bytes or a file path."""
    try:
        if isinstance(value, Image.Image):
            return value
        if isinstance(value, np.ndarray):
            return _from_array(value, sample_id)
        if isinstance(value, bytes | bytearray | memoryview):
            img = Image.open(io.BytesIO(bytes(value)))
        elif isinstance(value, str | Path):
            if not Path(value).is_file():
                raise SampleError(sample_id, "decode", f"image file not found: {value}")
            img = Image.open(value)
        else:
            raise SampleError(sample_id, "decode",
                              f"unsupported image value of type {type(value).__name__} "
                              "(give a PIL image, a numpy array, encoded bytes or a path)")
        img.load()
        return img
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise SampleError(sample_id, "decode", f"cannot decode image: {err}") from None


def _from_array(arr: np.ndarray, sample_id: str) -> Image.Image:
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise SampleError(sample_id, "decode", f"image array must be (H, W) or (H, W, C), got {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.isfinite(arr).all():
            raise SampleError(sample_id, "decode", "image array contains NaN or infinity")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)


@dataclass(frozen=True)
class PixelTransform:
    """Resize to the model's input size, scale to [0, 1], normalise: (C, size, size) float32."""

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def for_checkpoint(cls, config, folder: str | Path | None = None) -> PixelTransform:
        """Read mean/std from the folder's preprocessor_config.json when it has one."""
        size, channels = int(config.image_size), int(getattr(config, "num_channels", 3))
        mean, std = (0.5,) * channels, (0.5,) * channels
        spec = Path(folder) / "preprocessor_config.json" if folder else None
        if spec and spec.is_file():
            prep = json.loads(spec.read_text())
            if prep.get("do_normalize", True):
                mean = tuple(prep.get("image_mean", mean))[:channels]
                std = tuple(prep.get("image_std", std))[:channels]
            else:
                mean, std = (0.0,) * channels, (1.0,) * channels
        return cls(size, channels, mean, std)

    def __call__(self, img: Image.Image) -> np.ndarray:
        img = img.convert("L" if self.channels == 1 else "RGB")
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = arr[..., None] if arr.ndim == 2 else arr
        arr = (arr - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
