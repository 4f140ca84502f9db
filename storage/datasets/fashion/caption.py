"""`fashion-caption`: a 2x2 grid; the caption names the four items' classes in reading order."""

from __future__ import annotations

from attn_audit.storage.datasets.fashion.generator import FashionGenerator
from attn_audit.storage.datasets.fashion.grid import grid_scene
from attn_audit.storage.datasets.fashion.mnist import CLASS_WORDS
from attn_audit.storage.datasets.fashion.scene import Scene, render


class FashionCaption(FashionGenerator):
    """text = the caption, e.g. "coat bag tshirt sneaker" (one word per class, see CLASS_WORDS).

    ground_truth: {"word_cells": [0, 1, 2, 3] (caption word k shows cell k), "cell_masks": bool (4, 56, 56)
    of each cell's item pixels, "classes": [the four cells' classes], "source_indices": [source rows]}.
    No label.
    """

    name = "fashion-caption"
    version = 1
    modalities = ("image", "text")
    label_names = None

    def scene(self, i: int) -> Scene:
        return grid_scene(self.rng(self._position(i)), self.source)

    def _sample(self, i: int) -> dict:
        scene = self.scene(i)
        canvas, masks = render(scene, self.source.images)
        classes = [p.label for p in scene.placements]
        ground_truth = {"word_cells": list(range(len(classes))), "cell_masks": masks, "classes": classes,
                        "source_indices": [p.source_index for p in scene.placements]}
        return {"id": self._sample_id(i), "image": canvas, "text": " ".join(CLASS_WORDS[c] for c in classes),
                "ground_truth": ground_truth}
