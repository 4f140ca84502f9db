"""builtin:fashion-detr: the shipped detector reaches its AP bound through the adapter (boxes and classes as
explanations report them), and each detection's map points at the object its box found."""

import json
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import open_dataset
from attn_audit.tasks.evaluate.detection_ap import detection_ap
from attn_audit.tasks.evaluate.target_localisation import target_scores

from attn_audit import models

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
HELD_OUT = 200  # canvases of Fashion-MNIST *test* items, another seed than training.json's test set
# Issue 8's target. The shipped model scores 0.762 on training.json's 500 test canvases and 0.760 here (every
# query above 0.05 ranked; 0.733 with only the adapter's default 0.5 detections).
MIN_AP = 0.70


@pytest.fixture(scope="module")
def data():
    dataset = open_dataset(f"builtin:fashion-detect?split=test&n={HELD_OUT}&seed=7")
    return [dataset[i] for i in range(HELD_OUT)]


def test_shipped_detector_reaches_its_ap_on_held_out_canvases(data):
    m = models.load("builtin:fashion-detr", device="cpu")
    m.adapter.threshold = 0.05  # AP ranks every plausible detection, not only the confident ones
    position = {s["id"]: i for i, s in enumerate(data)}
    found = []
    for lo in range(0, HELD_OUT, 50):
        for e in models.explain(m, m.preprocess(data[lo:lo + 50]), method="raw_attention"):
            if e.ok and e.target is not None:
                detail = json.loads(e.target_detail)
                found.append((position[e.sample_id], detail["class"], e.probability, detail["box"]))
    assert detection_ap(found, [s["ground_truth"] for s in data]) >= MIN_AP
    recorded = json.loads((ROOT / "models/zoo/fashion-detr/training.json").read_text())
    assert recorded["test_ap50"] >= MIN_AP


def test_each_detection_map_points_at_its_object(data):
    m = models.load("builtin:fashion-detr", device="cpu")
    samples = data[:48]
    by_id = {s["id"]: s for s in samples}
    scores = []
    for lo in range(0, len(samples), 16):
        for e in models.explain(m, m.preprocess(samples[lo:lo + 16]), method="chefer2021"):
            if e.ok and e.target is not None:
                assert e.relevance["image"].shape == (12, 12)
                scored = target_scores(by_id[e.sample_id], e.relevance["image"], json.loads(e.target_detail))
                if isinstance(scored, dict):  # a false detection has no object to point at
                    scores.append(scored)
    assert len(scores) > len(samples)  # 1-4 objects per canvas, most of them found
    assert np.mean([s["pointing_game"] for s in scores]) >= 0.9  # 0.98 when shipped (rollout: 0.66)
    assert np.mean([s["seg_iou"] for s in scores]) >= 0.35  # Otsu-segmented map vs the object's mask: 0.47
