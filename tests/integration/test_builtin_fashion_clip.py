"""builtin:fashion-clip: the shipped CLIP retrieves held-out captions, explains each (canvas, caption) pair on the
4x4 patch grid and the caption words, and its training script runs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from attn_audit.storage.datasets import open_dataset

from attn_audit import models
from tests.in_process import run_smoke

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MIN_RETRIEVAL = 0.85  # top-1 among 100 held-out pairs, both directions


def _loaded():
    return models.load("builtin:fashion-clip", device="cpu")


def test_shipped_model_retrieves_held_out_captions():
    m = _loaded()
    data = open_dataset("builtin:fashion-caption?split=test&n=100&seed=7")  # another seed than training's
    batch = m.preprocess([data[i] for i in range(100)])
    with torch.no_grad():
        logits = m.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                         pixel_values=batch["pixel_values"]).logits_per_image
    truth = torch.arange(100)
    assert (logits.argmax(1) == truth).float().mean() >= MIN_RETRIEVAL
    assert (logits.argmax(0) == truth).float().mean() >= MIN_RETRIEVAL
    recorded = json.loads((ROOT / "models/zoo/fashion-clip/training.json").read_text())
    assert min(recorded["retrieval_image_to_caption"], recorded["retrieval_caption_to_image"]) >= MIN_RETRIEVAL


def test_pairs_are_explained_on_the_patch_grid_and_the_caption():
    m = _loaded()
    data = open_dataset("builtin:fashion-caption?split=test&n=8&seed=7")
    samples = [data[i] for i in range(8)]
    for exp, sample in zip(models.explain(m, m.preprocess(samples), method="chefer2021"), samples):
        assert exp.relevance["image"].shape == (4, 4) and np.isfinite(exp.relevance["image"]).all()
        assert exp.tokens["text"] == ["[CLS]", *sample["text"].split(), "[SEP]"]
        assert exp.relevance["image"].max() > 0


def test_training_script_smoke_run_loads(tmp_path):
    run_smoke("train_fashion_clip.py", tmp_path)
    m = models.load(str(tmp_path), device="cpu")
    assert type(m.adapter).__name__ == "ClipAdapter" and m.adapter.grid == 4
    assert json.loads((tmp_path / "training.json").read_text())["epochs"] == 1
