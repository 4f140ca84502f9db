"""A test that can fail: on the trained builtin:fashion-vit, removing the item's own patches first (relevance =
the ground-truth mask) must hurt accuracy more than removing random patches first (SPEC.md §3, positive test)."""

from __future__ import annotations

import numpy as np
import pytest
from attn_audit.models.perturbation import perturbation_curves
from attn_audit.storage.datasets import open_dataset
from attn_audit.tasks.evaluate.ground_truth import mask_on_grid
from attn_audit.tasks.evaluate.perturbation_job import auc
from attn_audit.tasks.evaluate.settings import IMAGE_STEPS

from attn_audit import models

N = 64


def positive_aucs(m, samples, maps, mode):
    batch = m.preprocess(samples)
    labels = np.array([s["label"] for s in samples])
    curves = perturbation_curves(m, batch, "image", maps, labels.tolist(), IMAGE_STEPS, directions=("positive",),
                                 mode=mode)
    correct = curves.prediction[:, 0, :] == labels[:, None]
    return np.array([auc(IMAGE_STEPS, c) for c in correct])


@pytest.mark.parametrize("mode", ["drop", "zero"])
def test_ground_truth_relevance_beats_random_relevance_on_the_positive_test(mode):
    m = models.load("builtin:fashion-vit", device="cpu")
    data = open_dataset(f"builtin:fashion-canvas?n={N}&seed=11")
    samples = [data[i] for i in range(N)]
    grid = m.adapter.grid
    rng = np.random.default_rng(0)
    truth = [mask_on_grid(s["ground_truth"]["image_mask"], (grid, grid)).astype(np.float32) for s in samples]
    random = [rng.random((grid, grid)).astype(np.float32) for _ in samples]
    gt_auc, random_auc = positive_aucs(m, samples, truth, mode), positive_aucs(m, samples, random, mode)
    assert gt_auc.mean() < random_auc.mean() - 5, (gt_auc.mean(), random_auc.mean())  # lower is better
