"""builtin:fashion-captioner: the shipped captioner reaches its accuracy bound, each word's map points at its
cell, and its training script runs."""

import json
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import open_dataset
from attn_audit.tasks.evaluate.target_localisation import target_scores

from attn_audit import models
from tests.in_process import run_smoke

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
HELD_OUT = 300  # grids of Fashion-MNIST *test* items, another seed than training.json's test set
# The shipped model scores 59.3% exact match / 87.3% words on 1,000 test grids (training.json); issue 8 asks for
# 90% exact match, which this 12-epoch CPU run does not reach (README). The bounds guard against regressions.
MIN_EXACT, MIN_WORDS = 0.55, 0.85


@pytest.fixture(scope="module")
def explained():
    m = models.load("builtin:fashion-captioner", device="cpu")
    data = open_dataset(f"builtin:fashion-caption?split=test&n={HELD_OUT}&seed=7")
    samples = [data[i] for i in range(HELD_OUT)]
    exps = []
    for lo in range(0, HELD_OUT, 100):
        exps += models.explain(m, m.preprocess(samples[lo:lo + 100]), method="chefer2021")
    return samples, exps


def test_shipped_captioner_reaches_its_accuracy_on_held_out_grids(explained):
    samples, exps = explained
    said = {s["id"]: [] for s in samples}
    for exp in exps:
        said[exp.sample_id].append(exp.target_label)
    truth = [s["text"].split() for s in samples]
    exact = np.mean([said[s["id"]] == t for s, t in zip(samples, truth)])
    words = np.mean([sum(a == b for a, b in zip(said[s["id"]], t)) / len(t) for s, t in zip(samples, truth)])
    assert exact >= MIN_EXACT and words >= MIN_WORDS
    recorded = json.loads((ROOT / "models/zoo/fashion-captioner/training.json").read_text())
    assert recorded["test_exact_match"] >= MIN_EXACT and recorded["test_word_accuracy"] >= MIN_WORDS


def test_each_word_points_at_its_item(explained):
    """Per-token localisation: word k's map against the item pixels of cell k (tasks/evaluate/target_localisation)."""
    samples, exps = explained
    by_id = {s["id"]: s for s in samples}
    scores = []
    for exp in exps:
        assert exp.relevance["image"].shape == (8, 8)
        scores.append(target_scores(by_id[exp.sample_id], exp.relevance["image"], json.loads(exp.target_detail)))
    assert np.mean([s["pointing_game"] for s in scores]) >= 0.85  # 0.91 when shipped
    assert np.mean([s["bmeq_otsu"] for s in scores]) >= 0.5  # 0.57


def test_training_script_smoke_run_loads(tmp_path):
    run_smoke("train_fashion_captioner.py", tmp_path)
    m = models.load(str(tmp_path), device="cpu")
    sample = open_dataset("builtin:fashion-caption?split=test&n=1")[0]
    exps = models.explain(m, m.preprocess([sample]), method="chefer2021")
    assert exps and all(e.ok for e in exps)
    assert json.loads((tmp_path / "training.json").read_text())["epochs"] == 1
