"""Image decoding and the checkpoint's pixel transform, with numpy + PIL only (no torchvision)."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from attn_audit.models.errors import SampleError
from PIL import Image


def decode_image(value, sample_id: str) -> Image.Image:
    """A decoded, non-empty "L" or "RGB" PIL image from a PIL image, a numpy array, encoded bytes or a file path.

    Images deeper than 8 bits are scaled by their bit depth. Whatever stops decoding is this sample's
    SampleError (stage "decode"), never its batch's.
    """
    try:
        img = _opened(value, sample_id)
        img.load()
        if 0 in img.size:
            raise SampleError(sample_id, "decode", f"image is empty ({img.width}×{img.height} pixels)")
        return _l_or_rgb(_eight_bit(img, sample_id))
    except SampleError:
        raise
    except Image.DecompressionBombError as err:
        raise SampleError(sample_id, "decode", f"cannot decode image: {err} Shrink it, or raise "
                          "PIL.Image.MAX_IMAGE_PIXELS if you trust the file") from None
    except Exception as err:  # decoders fed arbitrary bytes raise OSError, SyntaxError, EOFError, struct.error...
        raise SampleError(sample_id, "decode", f"cannot decode image ({type(err).__name__}): {err}") from None


def _opened(value, sample_id: str) -> Image.Image:
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, np.ndarray):
        return _from_array(value, sample_id)
    if isinstance(value, bytes | bytearray | memoryview):
        return Image.open(io.BytesIO(bytes(value)))
    if isinstance(value, str | Path):
        if not Path(value).is_file():
            raise SampleError(sample_id, "decode", f"image file not found: {value}")
        return Image.open(value)
    raise SampleError(sample_id, "decode", f"unsupported image value of type {type(value).__name__} "
                      "(give a PIL image, a numpy array, encoded bytes or a path)")


def _from_array(arr: np.ndarray, sample_id: str) -> Image.Image:
    """uint8 as is, uint16 scaled by its bit depth, floats in [0, 1] scaled to 255; other values are clipped."""
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise SampleError(sample_id, "decode", f"image array must be (H, W) or (H, W, C), got {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise SampleError(sample_id, "decode", f"image array must hold numbers, got dtype {arr.dtype}")
    if arr.dtype == np.uint16:
        arr = np.rint(arr / 257.0).astype(np.uint8)  # 65535 → 255
    elif arr.dtype != np.uint8:
        if not np.isfinite(arr).all():
            raise SampleError(sample_id, "decode", "image array contains NaN or infinity")
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
    return Image.fromarray(arr[..., 0] if arr.ndim == 3 and arr.shape[2] == 1 else arr)


_SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}


def _eight_bit(img: Image.Image, sample_id: str) -> Image.Image:
    """16-bit, 32-bit-integer and float images as 8-bit, scaled as arrays are: Pillow's own conversion clips
    (a 16-bit PNG would come out almost all white). Mode "I" is 32-bit storage for 16-bit samples (TIFF, PGM)."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        arr = np.asarray(img)
        if img.mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            raise SampleError(sample_id, "decode", f"32-bit image values span {arr.min()}..{arr.max()}; only "
                              "8- and 16-bit images are read: save it with 8 or 16 bits per channel")
        return _from_array(arr.astype(np.uint16), sample_id)
    if img.mode == "F":
        return _from_array(np.asarray(img), sample_id)
    return img


def _l_or_rgb(img: Image.Image) -> Image.Image:
    """The two modes the transforms take (CMYK, palette, alpha... converted here, where a failure is still this
    sample's). Alpha is dropped, as the checkpoints' own image processors do."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode in ("1", "LA"):
        return img.convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")  # a palette's transparency: Pillow warns when it goes straight to RGB
    return img.convert("RGB")


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
