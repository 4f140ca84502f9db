"""Audits of decoder-only models end to end (real Prefect, Ray, store): `builtin:retrieval-lm` on `kv-retrieval` and
`builtin:fashion-llava` on `fashion-vqa`. One stored map per generated token with its token in `target_detail`,
perturbation (prompt tokens; image patches) and localisation of the answer against the ground truth, and a report that
colours the prompt for every generated token (the stop token that ends a continuation is not explained)."""

from __future__ import annotations

import json
import re

import pytest
from attn_audit.flows.cli import main
from attn_audit.storage.store import Store

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLES = 10


def test_audit_of_the_builtin_lm_stores_every_generated_token_and_scores_the_answer(ray_cluster, prefect_api,
                                                                                    tmp_path):
    store = tmp_path / "store"
    code = main(["audit", "--model", "builtin:retrieval-lm", "--data", f"builtin:kv-retrieval?n={SAMPLES}",
                 "--methods", "chefer2021", "raw_attention", "--store", str(store), "--batch-size", "4",
                 "--quiet"])
    assert code == 0
    s = Store.open(store)
    (run,) = s.runs().to_pylist()
    exps = s.load_explanations(run["run_id"], method="chefer2021")
    assert len(exps) == SAMPLES and {e.target for e in exps} == {0}  # the answer; the stop token </s> ends it
    for e in exps:
        detail = json.loads(e.target_detail)
        assert detail["token"] == e.label and detail["continuation"] == e.label  # the model answers correctly
        assert len(e.relevance["text"]) == detail["position"] == len(e.tokens["text"])

    metrics = s.metrics(run_id=run["run_id"], columns=["method", "metric", "sample_id"]).to_pylist()
    per_sample = [r for r in metrics if r["sample_id"] is not None]
    for method in ("chefer2021", "raw_attention"):
        found = {r["metric"] for r in per_sample if r["method"] == method}
        assert {"prob_auc_positive", "prob_auc_negative", "auprc", "pointing_game"} <= found, method
        assert sum(r["metric"] == "auprc" and r["method"] == method for r in per_sample) == SAMPLES

    page = (tmp_path / "reports" / run["run_id"] / "index.html").read_text()
    lines = re.findall(r"<p>(.*?)</p>", page)
    explained = [re.search(r"class='t target'[^>]*>([^<]*)<", line) for line in lines]
    assert sum(m is not None and m.group(1).startswith("v") for m in explained) == 4  # best + worst per method
    assert "iframe" not in page


def test_audit_of_the_builtin_vlm_stores_both_maps_per_generated_word(ray_cluster, prefect_api, tmp_path):
    """`attn-audit audit --model builtin:fashion-llava --data builtin:fashion-vqa`: one stored map pair (4x4 patch
    grid, question words) per generated answer word — "where" answers have two —, perturbation of image patches and
    question words, localisation of the answer against the asked-about cell, and token-coloured text in the report."""
    store = tmp_path / "store"
    code = main(["audit", "--model", "builtin:fashion-llava", "--data", f"builtin:fashion-vqa?n={SAMPLES}",
                 "--methods", "chefer2021", "rollout", "--store", str(store), "--batch-size", "4", "--quiet"])
    assert code == 0
    s = Store.open(store)
    (run,) = s.runs().to_pylist()
    exps = s.load_explanations(run["run_id"], method="chefer2021")
    assert {e.sample_id for e in exps} == {f"fashion-vqa/test/{i:06d}" for i in range(SAMPLES)}
    for e in exps:
        detail = json.loads(e.target_detail)
        assert e.relevance["image"].shape == (4, 4) and e.tokens["text"][0] == "<s>"
        assert detail["token"] == detail["continuation"].split()[e.target]
    assert any(e.target == 1 for e in exps)  # a two-word answer ("top left") has a map per word

    metrics = s.metrics(run_id=run["run_id"], columns=["method", "metric", "modality", "sample_id"]).to_pylist()
    found = {(r["modality"], r["metric"]) for r in metrics if r["method"] == "chefer2021" and r["sample_id"]}
    assert {("image", "prob_auc_positive"), ("text", "prob_auc_positive"), ("image", "auprc"),
            ("text", "auprc"), ("image", "pointing_game")} <= found

    page = (tmp_path / "reports" / run["run_id"] / "index.html").read_text()
    assert "class='t target'" in page and "<img" in page and "iframe" not in page
