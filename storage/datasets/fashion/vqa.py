"""`fashion-vqa`: a 2x2 grid of items and a templated question; label = index of the answer word(s)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from attn_audit.storage.datasets.fashion.generator import FashionGenerator
from attn_audit.storage.datasets.fashion.grid import CELL_NAMES, grid_scene
from attn_audit.storage.datasets.fashion.mnist import CLASS_WORDS
from attn_audit.storage.datasets.fashion.scene import Scene, render

ANSWER_VOCAB = [*CLASS_WORDS, "yes", "no", *CELL_NAMES]


@dataclass(frozen=True)
class Question:
    words: list[str]
    answer: str
    cells: list[int]  # the grid cells the answer depends on
    answer_words: list[int]  # positions in `words` of the words that carry the answer


def ask(rng: np.random.Generator, classes: list[int]) -> Question:
    """One of three templates, equally likely; "is there" is answered yes and no equally often."""
    kind = rng.integers(3)
    if kind == 0:
        cell = int(rng.integers(4))
        words = ["what", "is", "in", "the", *CELL_NAMES[cell].split()]
        return Question(words, CLASS_WORDS[classes[cell]], [cell], list(range(4, len(words))))
    if kind == 1:
        if rng.random() < 0.5:
            cell = int(rng.integers(4))
            return Question(["is", "there", "a", CLASS_WORDS[classes[cell]]], "yes", [cell], [3])
        absent = int(rng.choice([c for c in range(10) if c not in classes]))
        return Question(["is", "there", "a", CLASS_WORDS[absent]], "no", [], [3])
    cell = int(rng.integers(4))
    return Question(["where", "is", "the", CLASS_WORDS[classes[cell]]], CELL_NAMES[cell], [cell], [3])


class FashionVqa(FashionGenerator):
    """text = the question (lower case, no punctuation, words split on whitespace).

    ground_truth: {"cells": [referenced cell indices; [] for a "no" answer], "image_mask": bool (56, 56)
    of those cells' item pixels, "text_tokens": [word positions that carry the answer], "classes": [the
    four cells' classes], "source_indices": [the four source rows]}. Cells: 0 top left, 1 top right,
    2 bottom left, 3 bottom right. label_names = the answer vocabulary.
    """

    name = "fashion-vqa"
    version = 1
    modalities = ("image", "text")

    def __init__(self, split: str = "test", n: int | None = None, seed: int = 0, root: str | None = None):
        super().__init__(split, n, seed, root)
        self.label_names = list(ANSWER_VOCAB)

    def scene(self, i: int) -> Scene:
        return grid_scene(self.rng(self._position(i)), self.source)

    def _sample(self, i: int) -> dict:
        scene = self.scene(i)
        classes = [p.label for p in scene.placements]
        question = ask(self.rng(i, stream=1), classes)
        canvas, masks = render(scene, self.source.images)
        ground_truth = {"cells": question.cells, "image_mask": masks[question.cells].any(axis=0),
                        "text_tokens": question.answer_words, "classes": classes,
                        "source_indices": [p.source_index for p in scene.placements]}
        return {"id": self._sample_id(i), "image": canvas, "text": " ".join(question.words),
                "label": ANSWER_VOCAB.index(question.answer), "ground_truth": ground_truth}
