"""builtin:fashion-vit: the shipped ViT reaches its accuracy bound; its training script runs."""

import json
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import open_dataset

from attn_audit import models
from tests.in_process import run_smoke

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
HELD_OUT = 500  # canvases from Fashion-MNIST *test* items, never seen in training
# Issue 3's target, met by the recorded accuracy on training.json's 2,000 test canvases (85.0%). This other slice
# scores 85.0% too (425/500); its bound leaves 5 samples of room for argmax flips between machines' float maths.
MIN_ACCURACY, MIN_SLICE_ACCURACY = 0.85, 0.84


def test_shipped_model_reaches_its_accuracy_on_held_out_canvases():
    m = models.load("builtin:fashion-vit", device="cpu")
    data = open_dataset(f"builtin:fashion-canvas?split=test&n={HELD_OUT}&seed=7")  # another seed than training's
    correct = 0
    for lo in range(0, HELD_OUT, 100):
        samples = [data[i] for i in range(lo, lo + 100)]
        exps = models.explain(m, m.preprocess(samples), method="raw_attention")
        correct += sum(e.prediction == s["label"] for e, s in zip(exps, samples))
    assert correct / HELD_OUT >= MIN_SLICE_ACCURACY
    recorded = json.loads((ROOT / "models/zoo/fashion-vit/training.json").read_text())
    assert recorded["test_accuracy"] >= MIN_ACCURACY


def test_explanations_are_8x8_patch_grids_that_point_at_the_item():
    m = models.load("builtin:fashion-vit", device="cpu")
    data = open_dataset("builtin:fashion-canvas?split=test&n=64&seed=7")
    samples = [data[i] for i in range(64)]
    exps = models.explain(m, m.preprocess(samples), method="chefer2021")
    from attn_audit.storage.datasets import patch_coverage

    hits = 0
    for exp, sample in zip(exps, samples):
        grid = exp.relevance["image"]
        assert grid.shape == (8, 8) and np.isfinite(grid).all()
        covered = patch_coverage(sample["ground_truth"]["image_mask"], 8)
        hits += bool(covered.ravel()[grid.argmax()])
    assert hits / len(samples) >= 0.8  # pointing game on a model that learned the task


def test_training_script_smoke_run_loads(tmp_path):
    run_smoke("train_fashion_vit.py", tmp_path)
    m = models.load(str(tmp_path), device="cpu")
    assert m.label_names[0] == "T-shirt/top" and json.loads((tmp_path / "training.json").read_text())["epochs"] == 1
