"""scripts/train_fashion_detr.py runs (both stages: backbone pre-training, then DETR), and what it writes loads as
a DETR the adapter explains."""

import json
from pathlib import Path

import pytest
from attn_audit.storage.datasets import open_dataset

from attn_audit import models
from tests.in_process import run_smoke

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def test_training_script_smoke_run_loads_and_explains(tmp_path):
    run_smoke("train_fashion_detr.py", tmp_path)
    report = json.loads((tmp_path / "training.json").read_text())
    assert report["epochs"] == 1 and 0.0 <= report["test_ap50"] <= 1.0
    assert report["backbone_pretraining"]["epochs"] == 1
    m = models.load(str(tmp_path), device="cpu")
    assert m.adapter.transform.size == 96 and m.adapter.transform.channels == 1
    m.adapter.threshold = 0.0  # an untrained model is sure of nothing: explain every query
    exps = models.explain(m, m.preprocess([open_dataset("builtin:fashion-detect?n=1")[0]]), method="chefer2021")
    assert len(exps) == 8 and all(e.relevance["image"].shape == (12, 12) for e in exps)
    assert {json.loads(e.target_detail)["label"] for e in exps} <= set(m.label_names)
