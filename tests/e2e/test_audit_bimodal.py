"""`attn-audit audit` on the built-in bi-modal models end to end (real Prefect, Ray, store): text and image maps
are two modalities, each with its perturbation tests and BMEQ, plus the combined BMEQ; CLIP's two towers."""

from __future__ import annotations

import pytest
from attn_audit.flows.cli import main
from attn_audit.storage.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.mark.parametrize("name", ["fashion-visualbert", "fashion-lxmert"])
def test_audit_of_a_vqa_model_stores_per_modality_results(name, ray_cluster, prefect_api, tmp_path):
    store = tmp_path / "store"
    code = main(["audit", "--model", f"builtin:{name}", "--data", "builtin:fashion-vqa?n=20", "--methods",
                 "chefer2021", "rollout", "--store", str(store), "--batch-size", "10"])
    assert code == 0
    s = Store.open(store)
    (run,) = s.runs().to_pylist()
    maps = s.explanations(run_id=run["run_id"], columns=["modality", "shape"]).to_pylist()
    assert {tuple(m["shape"]) for m in maps if m["modality"] == "image"} == {(2, 2)}
    assert sum(m["modality"] == "text" for m in maps) == 40
    metrics = s.metrics(run_id=run["run_id"], columns=["modality", "metric", "value"]).to_pylist()
    found = {(r["modality"], r["metric"]) for r in metrics}
    for modality in ("text", "image"):
        assert {(modality, "auc_positive"), (modality, "auc_negative")} <= found
    assert {("image", "bmeq_otsu"), ("combined", "bmeq_otsu")} <= found
    curves = s.perturbation_curves(run_id=run["run_id"], columns=["modality"])["modality"].to_pylist()
    assert set(curves) == {"text", "image"}
    # a trained model points at the asked-for cell: image pointing game well above chance (1/4)
    hits = [r["value"] for r in metrics if (r["modality"], r["metric"]) == ("image", "pointing_game")]
    assert sum(hits) / len(hits) > 0.6


def test_audit_of_the_clip_model_stores_both_towers_maps(ray_cluster, prefect_api, tmp_path, capsys):
    """builtin:fashion-clip on (grid, caption) pairs: one score per pair, an image map on the patch grid and a
    text map over the caption tokens, written by the flow's workers; the evaluation perturbs each tower."""
    store = tmp_path / "store"
    code = main(["audit", "--model", "builtin:fashion-clip", "--data", "builtin:fashion-caption?n=12", "--methods",
                 "chefer2021", "raw_attention", "--store", str(store), "--batch-size", "6"])
    assert code == 0
    s = Store.open(store)
    (run,) = s.runs().to_pylist()
    assert run["status"] == "completed" and run["explained"] == 12
    maps = s.explanations(run_id=run["run_id"], columns=["modality", "shape", "tokens"]).to_pylist()
    assert {tuple(m["shape"]) for m in maps if m["modality"] == "image"} == {(4, 4)}
    assert all(m["tokens"] for m in maps if m["modality"] == "text") and len(maps) == 12 * 2 * 2
    metrics = s.metrics(run_id=run["run_id"], columns=["modality", "metric", "details"]).to_pylist()
    found = {(r["modality"], r["metric"]) for r in metrics}
    for modality in ("text", "image"):
        assert {(modality, "auc_positive"), (modality, "auc_negative"), (modality, "prob_auc_positive")} <= found
    assert not any(r["metric"] == "skipped" and "not available" in (r["details"] or "") for r in metrics)
    printed = capsys.readouterr().out  # the terminal's results: one table per tower (none was printed before)
    assert f"results — run {run['run_id']} · image" in printed and f"results — run {run['run_id']} · text" in printed
