"""Scenes: a background (noise, clutter) plus 28x28 items pasted at given places, rendered with masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from attn_audit.storage.datasets.fashion.mnist import ITEM_SIZE

NOISE_MAX = 24  # background noise stays well below the items' typical brightness
CLUTTER_MIN = 80  # clutter is bright enough to distract, unlike the noise
CLUTTER_TRIES = 10  # a shape that finds no free place in this many tries is left out

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 with x1, y1 exclusive (numpy slice bounds)


@dataclass(frozen=True)
class Placement:
    source_index: int  # row of the Fashion-MNIST source arrays
    label: int
    x: int  # left column of the 28x28 paste square
    y: int  # top row of the paste square

    @property
    def square(self) -> Box:
        return (self.x, self.y, self.x + ITEM_SIZE, self.y + ITEM_SIZE)


@dataclass(frozen=True)
class Scene:
    background: np.ndarray  # uint8 (H, W): what the canvas shows where no item pixel is
    placements: tuple[Placement, ...]


def render(scene: Scene, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The canvas (uint8 (H, W)) and one mask per placement (bool (k, H, W)) of the item's nonzero pixels.

    An item's nonzero pixels replace the background; its zero pixels leave the background showing.
    """
    canvas = scene.background.copy()
    masks = np.zeros((len(scene.placements), *canvas.shape), dtype=bool)
    for mask, place in zip(masks, scene.placements, strict=True):
        item = images[place.source_index]
        rows, cols = slice(place.y, place.y + ITEM_SIZE), slice(place.x, place.x + ITEM_SIZE)
        mask[rows, cols] = item > 0
        canvas[rows, cols] = np.where(mask[rows, cols], item, canvas[rows, cols])
    return canvas, masks


def noise(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return rng.integers(0, NOISE_MAX + 1, size=shape, dtype=np.uint8)


def add_clutter(background: np.ndarray, rng: np.random.Generator, keep_out: Box, count: int) -> None:
    """Draw `count` small blobs and strokes (never item copies) into `background`, none in `keep_out`."""
    height, width = background.shape
    for _ in range(count):
        stamp = _clutter_stamp(rng)
        value = rng.integers(CLUTTER_MIN, 256)
        h, w = stamp.shape
        for _ in range(CLUTTER_TRIES):
            x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            if not _overlaps((x, y, x + w, y + h), keep_out):
                background[y:y + h, x:x + w][stamp] = value
                break


def tight_box(mask: np.ndarray) -> list[int]:
    """[x0, y0, x1, y1] of a mask's true pixels, x1 and y1 exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def _clutter_stamp(rng: np.random.Generator) -> np.ndarray:
    kind = rng.integers(4)
    if kind == 0:  # blob
        return np.ones((rng.integers(2, 6), rng.integers(2, 6)), dtype=bool)
    length, thickness = int(rng.integers(6, 15)), int(rng.integers(1, 3))
    if kind == 1:
        return np.ones((thickness, length), dtype=bool)
    if kind == 2:
        return np.ones((length, thickness), dtype=bool)
    diagonal = np.eye(length, dtype=bool)
    return diagonal if rng.integers(2) else diagonal[:, ::-1]


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
