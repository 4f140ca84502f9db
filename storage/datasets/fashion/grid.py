"""The 2x2 grid shared by `fashion-vqa` and `fashion-caption`: four items of distinct classes, 56x56."""

from __future__ import annotations

import numpy as np
from attn_audit.storage.datasets.fashion.generator import FashionSource
from attn_audit.storage.datasets.fashion.mnist import ITEM_SIZE
from attn_audit.storage.datasets.fashion.scene import Placement, Scene, noise

GRID_SIZE = 2 * ITEM_SIZE
# Cells in reading order; cell c sits at column c % 2, row c // 2.
CELL_NAMES = ["top left", "top right", "bottom left", "bottom right"]


def grid_scene(rng: np.random.Generator, source: FashionSource) -> Scene:
    classes = rng.choice(10, size=len(CELL_NAMES), replace=False)
    placements = tuple(Placement(int(rng.choice(source.by_class[c])), int(c),
                                 x=ITEM_SIZE * (cell % 2), y=ITEM_SIZE * (cell // 2))
                       for cell, c in enumerate(classes))
    return Scene(noise(rng, (GRID_SIZE, GRID_SIZE)), placements)
