"""evaluate_run on a real store: a run written shard by shard with `explain_shard` (the code the flow's actors
run, here without Prefect and Ray), then perturbation, localisation, sanity and aggregation read it back."""

from __future__ import annotations

import argparse
import json
import re

import pyarrow.compute as pc
import pytest
import torch
import transformers
from attn_audit.flows import evaluate_commands
from attn_audit.flows.plan import model_fingerprint
from attn_audit.storage.datasets import CLASS_NAMES, open_dataset
from attn_audit.storage.store import RunSpec, Store
from attn_audit.tasks.evaluate import EvalSettings, chunks, evaluate_run, stored_summary
from attn_audit.tasks.explain_shard import explain_shard
from attn_audit.tasks.report import write_report
from attn_audit.tasks.shards import plan_shards
from PIL import Image

from attn_audit import models
from tests import tiny_models

METHODS = ("chefer2021", "rollout")
N, SHARD = 6, 4  # two shards: 4 + 2 samples


def write_run(store: Store, model_ref: str, data_ref: str, methods=METHODS) -> str:
    dataset = open_dataset(data_ref)
    spec = RunSpec(model_ref, model_fingerprint(model_ref), dataset.ref, dataset.fingerprint(), methods,
                   {"target": "predicted"}, num_samples=min(N, len(dataset)), shard_size=SHARD)
    run = store.begin_run(spec)
    m = models.load(model_ref, device="cpu")
    for shard in plan_shards(run.num_samples, SHARD):
        explain_shard(m, dataset, store, run.run_id, shard, methods, batch_size=4)
    store.finish_run(run.run_id)
    return run.run_id


@pytest.fixture(scope="module")
def canvas_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit")
    config = transformers.ViTConfig(image_size=64, patch_size=16, num_channels=1,
                                    id2label=dict(enumerate(CLASS_NAMES)), **tiny_models.SMALL)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    store = Store.open(tmp_path_factory.mktemp("store") / "s", create=True)
    return store, write_run(store, str(folder), f"builtin:fashion-canvas?n={N}")


def _rows(store, run_id, table="metrics", **where):
    t = store.table(table, run_id=run_id)
    for column, value in where.items():
        t = t.filter(pc.is_null(t[column]) if value is None else pc.equal(t[column], value))
    return t.to_pylist()


def test_evaluate_canvas_run_end_to_end(canvas_run):
    store, run_id = canvas_run
    settings = EvalSettings(sanity_samples=3, resamples=200)
    reports = []
    s = evaluate_run(store, run_id, tests="perturbation,localisation,sanity", batch_size=3, device="cpu",
                     settings=settings, on_progress=lambda done, total: reports.append((done, total)))
    assert (s.chunks, s.chunks_skipped, s.samples) == (2, 0, N)
    # the total comes first, then each unit's end: the two chunks and the sanity check's 3 samples
    assert reports[0] == (0, N + 3) and reports[-1] == (N + 3, N + 3) and len(reports) == 4
    curves = [r for r in _rows(store, run_id, "perturbation_curves") if r["sample_id"] is not None]
    assert len(curves) == N * len(METHODS) * 2 * 10  # samples × methods × directions × image steps
    preds = {r["sample_id"]: r for r in store.predictions(run_id=run_id).to_pylist()}
    for r in curves:
        if r["step"] == 0:  # p = 0 is the unperturbed model
            assert r["probability"] == pytest.approx(preds[r["sample_id"]]["probability"], abs=1e-5)
    per_sample = [r for r in _rows(store, run_id) if r["sample_id"] is not None]
    names = {r["metric"] for r in per_sample}
    assert {"auc_positive", "auc_negative", "prob_auc_positive", "bmeq_fixed", "bmeq_topk", "bmeq_otsu", "auprc",
            "pointing_game", "sanity_spearman@head", "sanity_spearman@layer.0",
            "sanity_spearman@embeddings"} <= names
    assert {r["modality"] for r in per_sample if r["metric"] == "bmeq_otsu"} == {"image", "combined"}
    assert len([r for r in per_sample if r["metric"] == "sanity_spearman@head"]) == 3 * len(METHODS)
    for r in per_sample:
        if r["metric"].startswith("auc_"):
            assert 0 <= r["value"] <= 90 and json.loads(r["details"])["against"] == "label"
    results = {(r["method"], r["metric"], r["modality"]): r for r in s.results}
    auc = results[("chefer2021", "auc_positive", "image")]
    assert auc["ci_low"] <= auc["mean"] <= auc["ci_high"] and auc["n"] == N and auc["higher_is_better"] is False
    assert sorted(r["rank"] for k, r in results.items() if k[1:] == ("auc_positive", "image")) in ([1, 2], [1, 1])
    stored = {(r["method"], r["metric"], r["modality"]): r for r in stored_summary(store, run_id)}
    assert stored[("chefer2021", "auc_positive", "image")]["mean"] == pytest.approx(auc["mean"])
    dataset_curve = _rows(store, run_id, "perturbation_curves", sample_id=None, method="rollout",
                          perturbation="negative")
    assert [r["step"] for r in sorted(dataset_curve, key=lambda r: r["step"])] == list(range(10))

    # the same evaluation again: every chunk is committed, nothing new is written
    versions = {t: store.delta(t).version() for t in ("metrics", "perturbation_curves")}
    again = evaluate_run(store, run_id, tests="perturbation,localisation,sanity", device="cpu", settings=settings)
    assert again.chunks_skipped == 2 and again.samples == 0
    assert {t: store.delta(t).version() for t in versions} == versions
    assert again.results == s.results


def test_the_sanity_check_in_parts_gives_every_sample_its_value_whole(canvas_run, monkeypatch):
    """Its parts spread over the workers; each sample's correlations are those of the check run in one piece."""
    store, run_id = canvas_run

    def sanity(samples: int) -> dict:
        settings = EvalSettings(sanity_samples=samples, resamples=50)  # another digest: computed afresh
        evaluate_run(store, run_id, tests="sanity", device="cpu", settings=settings)
        digest = settings.digest("sanity")
        return {(r["method"], r["metric"], r["sample_id"]): r["value"] for r in _rows(store, run_id)
                if r["metric"].startswith("sanity_spearman@") and r["sample_id"] is not None
                and json.loads(r["details"])["eval"] == digest}

    whole = sanity(4)  # one unit
    monkeypatch.setattr(chunks, "SANITY_PART", 2)
    parts = sanity(5)  # [0, 2), [2, 4), [4, 5)
    assert len({k[2] for k in whole}) == 4 and len({k[2] for k in parts}) == 5
    assert all(parts[k] == pytest.approx(v, abs=1e-6) for k, v in whole.items())


def test_zero_protocol_and_limit_through_the_cli(canvas_run, capsys):
    store, run_id = canvas_run
    parser = argparse.ArgumentParser()
    evaluate_commands.register(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--store", store.uri, "--run", run_id[:8], "--tests", "perturbation",
                              "--perturbation-mode", "zero", "--limit", "3", "--methods", "rollout",
                              "--device", "cpu"])
    assert args.handler(args) == 0
    out = capsys.readouterr().out
    assert run_id in out and "rollout" in out
    zero = [r for r in _rows(store, run_id, metric="auc_negative_zero") if r["sample_id"] is not None]
    assert sorted(r["sample_id"] for r in zero) == sorted(open_dataset(f"builtin:fashion-canvas?n={N}").sample_id(i)
                                                          for i in range(3))


def test_text_run_without_ground_truth_is_skipped_with_a_note(tmp_path):
    model, tok = tiny_models.text_model("bert")
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    data = tmp_path / "texts.jsonl"
    data.write_text("\n".join(json.dumps({**t, "label": i % 3}) for i, t in enumerate(tiny_models.texts(N))))
    store = Store.open(tmp_path / "store", create=True)
    run_id = write_run(store, str(tmp_path / "bert"), f"jsonl:{data}", methods=("chefer2021", "attention_sum"))
    s = evaluate_run(store, run_id, device="cpu", settings=EvalSettings(resamples=100))
    assert any("no text ground truth" in note for note in s.notes)
    metrics = {r["metric"] for r in s.results}
    assert {"auc_positive", "auc_negative"} <= metrics and not metrics & {"bmeq_fixed", "auprc"}
    curves = _rows(store, run_id, "perturbation_curves", sample_id=None, method="chefer2021", perturbation="positive")
    assert sorted(r["fraction"] for r in curves) == pytest.approx([0, .25, .5, .75, .8, .85, .9, .95, 1])
    with pytest.raises(models.AttnAuditError, match="no method"):
        evaluate_run(store, run_id, methods=["rollout"])
    page = write_report(store, run_id, tmp_path / "report")
    text, _ = _check_offline_page(page)
    assert "<figure class='text'>" in text and "span class='t'" in text and "iframe" not in text  # tokens inline


def _check_offline_page(page):
    text = page.read_text()
    assert "<table>" in text and "http://" not in text and "https://" not in text and "<script" not in text
    files = re.findall(r"(?:src)='([^']+)'", text)
    for name in files:
        assert (page.parent / name).is_file(), name
        if name.endswith(".png"):
            Image.open(page.parent / name).verify()
    return text, files


def test_report_of_an_evaluated_run(canvas_run, tmp_path):
    store, run_id = canvas_run
    evaluate_run(store, run_id, device="cpu", settings=EvalSettings(resamples=100))
    page = write_report(store, run_id, tmp_path / "report")
    text, files = _check_offline_page(page)
    assert run_id in text and "auc_positive" in text and "bmeq_otsu" in text
    assert {"curve-image-positive-accuracy.png", "curve-image-negative-probability.png"} <= set(files)
    assert sum(f.startswith("examples/chefer2021-") for f in files) == 2  # best and worst
