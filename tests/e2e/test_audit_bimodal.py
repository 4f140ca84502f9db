"""`attn-audit audit` on the built-in VQA models end to end (real Prefect, Ray, store): text and image maps are
two modalities, each with its perturbation tests and BMEQ, plus the combined BMEQ."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from storage.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
SHIPPED = [n for n in ("fashion-visualbert", "fashion-lxmert") if (ZOO / n / "config.json").is_file()]


@pytest.mark.parametrize("name", SHIPPED)
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
