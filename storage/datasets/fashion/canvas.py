"""`fashion-canvas`: one item at a random place on a cluttered 64x64 canvas; label = the item's class."""

from __future__ import annotations

from attn_audit.storage.datasets.fashion.generator import FashionGenerator
from attn_audit.storage.datasets.fashion.mnist import CLASS_NAMES, ITEM_SIZE
from attn_audit.storage.datasets.fashion.scene import Placement, Scene, add_clutter, noise, render, tight_box

CANVAS_SIZE = 64


class FashionCanvas(FashionGenerator):
    """ground_truth: {"image_mask": bool (64, 64), the item's nonzero pixels; "box": [x0, y0, x1, y1] of
    that mask, x1/y1 exclusive; "source_indices": [row of the Fashion-MNIST source]}.

    Clutter (2-5 blobs and strokes) never touches the item's 28x28 paste square.
    """

    name = "fashion-canvas"
    version = 1
    modalities = ("image",)
    label_names = list(CLASS_NAMES)

    def scene(self, i: int) -> Scene:
        rng = self.rng(self._position(i))
        index = int(rng.integers(len(self.source.labels)))
        x, y = (int(v) for v in rng.integers(0, CANVAS_SIZE - ITEM_SIZE + 1, size=2))
        place = Placement(index, int(self.source.labels[index]), x, y)
        background = noise(rng, (CANVAS_SIZE, CANVAS_SIZE))
        add_clutter(background, rng, keep_out=place.square, count=int(rng.integers(2, 6)))
        return Scene(background, (place,))

    def _sample(self, i: int) -> dict:
        scene = self.scene(i)
        canvas, masks = render(scene, self.source.images)
        place = scene.placements[0]
        ground_truth = {"image_mask": masks[0], "box": tight_box(masks[0]),
                        "source_indices": [place.source_index]}
        return {"id": self._sample_id(i), "image": canvas, "label": place.label, "ground_truth": ground_truth}
