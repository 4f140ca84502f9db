"""`fashion-detect`: 1-4 items on a 96x96 canvas, in disjoint places, with classes, boxes and masks."""

from __future__ import annotations

import numpy as np
from attn_audit.storage.datasets.fashion.generator import FashionGenerator
from attn_audit.storage.datasets.fashion.mnist import CLASS_NAMES, ITEM_SIZE
from attn_audit.storage.datasets.fashion.scene import Box, Placement, Scene, noise, render, tight_box

CANVAS_SIZE = 96
MAX_ITEMS = 4


def disjoint_regions(rng: np.random.Generator) -> list[Box]:
    """Four rectangles of at least 28x28 tiling the canvas: a random vertical cut, then a random
    horizontal cut on each side. Items placed in different regions can never overlap, with no retries."""
    x_cut = int(rng.integers(ITEM_SIZE, CANVAS_SIZE - ITEM_SIZE + 1))
    regions = []
    for x0, x1 in ((0, x_cut), (x_cut, CANVAS_SIZE)):
        y_cut = int(rng.integers(ITEM_SIZE, CANVAS_SIZE - ITEM_SIZE + 1))
        regions += [(x0, 0, x1, y_cut), (x0, y_cut, x1, CANVAS_SIZE)]
    return regions


class FashionDetect(FashionGenerator):
    """ground_truth: {"classes": [class per item], "boxes": [[x0, y0, x1, y1] per item, tight around its
    mask, x1/y1 exclusive], "masks": bool (k, 96, 96), "source_indices": [source row per item]}. No label;
    label_names name the classes. Background: low noise only (no clutter).
    """

    name = "fashion-detect"
    version = 1
    modalities = ("image",)
    label_names = list(CLASS_NAMES)

    def scene(self, i: int) -> Scene:
        rng = self.rng(self._position(i))
        regions = disjoint_regions(rng)
        count = int(rng.integers(1, MAX_ITEMS + 1))
        placements = []
        for r in rng.choice(len(regions), size=count, replace=False):
            x0, y0, x1, y1 = regions[r]
            index = int(rng.integers(len(self.source.labels)))
            x, y = int(rng.integers(x0, x1 - ITEM_SIZE + 1)), int(rng.integers(y0, y1 - ITEM_SIZE + 1))
            placements.append(Placement(index, int(self.source.labels[index]), x, y))
        return Scene(noise(rng, (CANVAS_SIZE, CANVAS_SIZE)), tuple(placements))

    def _sample(self, i: int) -> dict:
        scene = self.scene(i)
        canvas, masks = render(scene, self.source.images)
        ground_truth = {"classes": [p.label for p in scene.placements],
                        "boxes": [tight_box(m) for m in masks], "masks": masks,
                        "source_indices": [p.source_index for p in scene.placements]}
        return {"id": self._sample_id(i), "image": canvas, "ground_truth": ground_truth}
