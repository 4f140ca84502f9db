"""Real broken image files for the tests of per-sample errors."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def misdeclared_chunk_png(seed: int = 0) -> bytes:
    """A noise PNG whose image-data chunk declares the wrong length: Pillow raises SyntaxError ("broken PNG file")
    while decoding it, not the OSError of a merely truncated file."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)).save(buf, "PNG")
    data = buf.getvalue()
    at = data.index(b"IDAT") - 4  # the chunk's length field
    return data[:at] + (100).to_bytes(4, "big") + data[at + 4:]
