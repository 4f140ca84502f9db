"""`attn-audit audit` with the LRP family on the built-in ViT end to end (real Prefect, Ray, store): every method's
maps stored once per sample under its spec, its perturbation and localisation metrics computed like the others'."""

from __future__ import annotations

import json

import pytest
from attn_audit.flows.cli import main
from attn_audit.storage.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SPECS = ["chefer2021", "transformer_attribution:start_layer=1", "partial_lrp", "lrp", "attnlrp", "cp_lrp"]


def test_audit_with_the_lrp_family_stores_and_evaluates_every_method(ray_cluster, prefect_api, tmp_path):
    store = tmp_path / "store"
    code = main(["audit", "--model", "builtin:fashion-vit", "--data", "builtin:fashion-canvas?n=12", "--methods",
                 *SPECS, "--store", str(store), "--batch-size", "6", "--quiet"])
    assert code == 0
    s = Store.open(store)
    (run,) = s.runs().to_pylist()
    assert run["methods"] == SPECS
    assert json.loads(run["config"])["method_params"] == {"transformer_attribution:start_layer=1": {
        "start_layer": 1, "dtype": "float32", "tolerance": 0.05}}
    maps = s.explanations(run_id=run["run_id"], columns=["sample_id", "method", "shape"]).to_pylist()
    assert sorted({m["method"] for m in maps}) == sorted(SPECS) and len(maps) == 12 * len(SPECS)
    assert all(tuple(m["shape"]) == (8, 8) for m in maps)
    metrics = s.metrics(run_id=run["run_id"], columns=["method", "metric"]).to_pylist()
    for spec in SPECS:
        found = {r["metric"] for r in metrics if r["method"] == spec}
        assert {"auc_positive", "auc_negative", "pointing_game"} <= found, spec
