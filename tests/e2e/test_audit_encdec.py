"""The audit flow on a many-target model: builtin:fashion-captioner on fashion-caption through real Prefect, real
Ray and the real store — one predictions row and one map per (sample, generated token), described by
target_detail, equal to what models.explain gives."""

from __future__ import annotations

import json

import numpy as np
import pytest
from attn_audit.flows.audit import run_audit
from attn_audit.flows.request import AuditRequest
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store
from attn_audit.tasks.evaluate import EvalSettings, evaluate_run

from attn_audit import models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
METHODS = ["chefer2021", "raw_attention"]


def test_audit_of_the_captioner_stores_one_row_per_generated_token(ray_cluster, prefect_api, tmp_path):
    data = "builtin:fashion-caption?n=12"
    s = run_audit(AuditRequest(model="builtin:fashion-captioner", data=data, methods=METHODS,
                               store=str(tmp_path / "store"), shard_size=6, batch_size=4), progress=False)
    assert (s.status, s.samples, s.failed, s.shards) == ("completed", 12, 0, 2)
    store = Store.open(tmp_path / "store")
    m = models.load("builtin:fashion-captioner", device="cpu")
    dataset = open_dataset(data)
    direct = [e for lo in range(0, 12, 4)
              for e in models.explain(m, m.preprocess([dataset[i] for i in range(lo, lo + 4)]), method=METHODS)]
    preds = {(p["sample_id"], p["target_index"]): p for p in store.predictions(run_id=s.run_id).to_pylist()}
    assert len(preds) == s.explained == len(direct) // len(METHODS) > 12
    stored = {(e.sample_id, e.target, e.method): e for e in store.load_explanations(s.run_id)}
    for exp in direct:
        row = preds[exp.sample_id, exp.target]
        assert row["target_label"] == exp.target_label and json.loads(row["target_detail"])["position"] == exp.target
        got = stored[exp.sample_id, exp.target, exp.method]
        for modality in ("image", "text"):
            np.testing.assert_allclose(got.relevance[modality], exp.relevance[modality], atol=1e-6)

    # The evaluation scores each generated word's image map against its cell (word k <-> cell k), per token.
    summary = evaluate_run(store, s.run_id, device="cpu", settings=EvalSettings(resamples=100))
    rows = [r for r in store.metrics(run_id=s.run_id).to_pylist()
            if r["sample_id"] is not None and r["method"] == "chefer2021"]
    targets = {k for k in preds if k[1] is not None}
    pointing = [r for r in rows if r["metric"] == "pointing_game"]
    assert {(r["sample_id"], r["target_index"]) for r in pointing} == targets
    assert np.mean([r["value"] for r in pointing]) > 0.6  # a random map points into the right cell 1 time in 4

    # Perturbation over the encoder's patches, per generated word (SPEC §3): removing the patches its map ranks
    # first loses the word sooner than removing the last ones; the decoder's own tokens are not perturbed.
    auc = {test: {(r["sample_id"], r["target_index"]): r["value"] for r in rows
                  if r["metric"] == f"auc_{test}" and r["modality"] == "image"} for test in ("positive", "negative")}
    assert set(auc["positive"]) == set(auc["negative"]) == targets
    assert np.mean(list(auc["positive"].values())) < np.mean(list(auc["negative"].values())) - 10
    assert any("captioner models are perturbed over their image tokens only" in n for n in summary.notes)


def test_audit_of_the_detector_stores_each_detection_and_its_evaluation(ray_cluster, prefect_api, tmp_path):
    """builtin:fashion-detr through the flow: one row per detection (box + class), each map scored against the
    object its box found (grid metrics + Otsu segmentation), and DETR's pixel-zeroing perturbation per detection."""
    s = run_audit(AuditRequest(model="builtin:fashion-detr", data="builtin:fashion-detect?n=8", methods=METHODS,
                               store=str(tmp_path / "store"), shard_size=4, batch_size=4), progress=False)
    assert (s.status, s.samples, s.failed) == ("completed", 8, 0)
    store = Store.open(tmp_path / "store")
    preds = store.predictions(run_id=s.run_id).to_pylist()
    detections = {(p["sample_id"], p["target_index"]) for p in preds if p["target_index"] is not None}
    assert len(detections) >= 8 and all(len(json.loads(p["target_detail"])["box"]) == 4 for p in preds
                                        if p["target_index"] is not None)
    evaluate_run(store, s.run_id, device="cpu", settings=EvalSettings(resamples=100))
    rows = [r for r in store.metrics(run_id=s.run_id).to_pylist()
            if r["sample_id"] is not None and r["method"] == "chefer2021"]
    by_metric = {name: {(r["sample_id"], r["target_index"]): r["value"] for r in rows if r["metric"] == name}
                 for name in ("pointing_game", "seg_iou", "auc_positive_zero", "auc_negative_zero")}
    assert set(by_metric["auc_positive_zero"]) == set(by_metric["auc_negative_zero"]) == detections
    assert set(by_metric["seg_iou"]) <= detections and len(by_metric["seg_iou"]) >= 0.8 * len(detections)
    assert np.mean(list(by_metric["pointing_game"].values())) > 0.8
    mean = {name: np.mean(list(values.values())) for name, values in by_metric.items()}
    assert mean["auc_positive_zero"] < mean["auc_negative_zero"]  # blacking out the relevant cells hurts more
    # DETR only zeroes, so asking for zero explicitly is the evaluation already stored: nothing is written twice.
    count = store.metrics(run_id=s.run_id).num_rows
    evaluate_run(store, s.run_id, device="cpu", settings=EvalSettings(resamples=100, perturbation_mode="zero"))
    assert store.metrics(run_id=s.run_id).num_rows == count
