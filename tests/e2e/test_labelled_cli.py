"""A user's own labelled image folders through `attn-audit explain` and `audit` (the console script's `main`, on
the session's Ray and Prefect): accuracy against a hand count, unknown labels and out-of-range targets refused in
seconds before anything starts, `--limit 0` doing nothing."""

from __future__ import annotations

import json
import re

import pytest
from attn_audit.flows import audit as audit_flow
from attn_audit.flows.cli import main
from attn_audit.storage.datasets import CLASS_NAMES, open_dataset
from attn_audit.storage.store import Store
from PIL import Image

from attn_audit import models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MODEL = "builtin:fashion-vit"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Class folders Bag/ Sneaker/ Trouser/ (a subset of the model's ten classes, in another order) with three
    test canvases each; the hand count of those the model classifies right."""
    root = tmp_path_factory.mktemp("own") / "images"
    dataset = open_dataset("builtin:fashion-canvas?split=test&n=200")
    kept: dict[str, list] = {"Bag": [], "Sneaker": [], "Trouser": []}
    for i in range(len(dataset)):
        sample = dataset[i]
        name = CLASS_NAMES[sample["label"]]
        if name in kept and len(kept[name]) < 3:
            kept[name].append(sample["image"])
    m = models.load(MODEL, device="cpu")
    right = 0
    for name, images in kept.items():
        (root / name).mkdir(parents=True)
        for j, image in enumerate(images):
            Image.fromarray(image).save(root / name / f"{j}.png")
        exps = models.explain(m, m.preprocess([{"image": x} for x in images]), method="raw_attention")
        right += sum(m.label_names[e.prediction] == name for e in exps)
    return root, right


def test_own_class_folders_through_explain_and_audit(folders, ray_cluster, prefect_api, tmp_path, capsys):
    """Through `main` in this process (what the console script runs), on the session's Ray and Prefect."""
    root, right = folders
    store_path = tmp_path / "store"
    common = ("--model", MODEL, "--data", f"imagefolder:{root}", "--store", str(store_path), "--quiet",
              "--workers", "1")
    code = main(["explain", *common, "--method", "rollout"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{right / 9:.1%} of 9 labelled samples" in " ".join(out.split())
    (run,) = Store.open(store_path).runs().to_pylist()
    preds = Store.open(store_path).predictions(run_id=run["run_id"]).to_pylist()
    assert sorted({p["label"] for p in preds}) == ["Bag", "Sneaker", "Trouser"]
    assert sum(p["correct"] for p in preds) == right

    code = main(["audit", *common, "--method", "chefer2021", "--method", "rollout"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"{right / 9:.1%} of 9 labelled samples" in " ".join(out.split())
    store = Store.open(store_path)
    audit_run = next(r for r in store.runs().to_pylist() if r["run_id"] != run["run_id"])
    metrics = store.metrics(run_id=audit_run["run_id"]).to_pylist()
    against = {json.loads(r["details"])["against"] for r in metrics if r["metric"] == "auc_positive" and r["sample_id"]}
    assert against == {"label"}  # the evaluation's accuracy is against the folder labels, by name


def test_input_errors_are_refused_before_prefect_or_ray_is_reached(folders, tmp_path, capsys, monkeypatch):
    root, _ = folders
    (root.parent / "more" / "Hat").mkdir(parents=True)
    Image.new("L", (64, 64)).save(root.parent / "more" / "Hat" / "0.png")
    (root.parent / "more" / "Bag").mkdir()
    Image.new("L", (64, 64)).save(root.parent / "more" / "Bag" / "0.png")
    def reached(*_args, **_kwargs):
        raise AssertionError("an input error reached Prefect or Ray")

    monkeypatch.setattr(audit_flow, "prefect_session", reached)
    monkeypatch.setattr(audit_flow, "ray_session", reached)
    cases = [
        (("--data", f"imagefolder:{root.parent / 'more'}"), r"not classes of the model: 'Hat'.*8=Bag.*--label-map"),
        (("--data", "builtin:fashion-canvas", "--target", "99"), r"--target 99 is out of range.*10 classes"),
        (("--data", f"imagefolder:{root.parent / 'more'}", "--label-map", '{"Hat": "Beret"}'),
         r"maps 'Hat' to 'Beret'"),
    ]
    for args, message in cases:  # through `main` in this process: what the console script runs
        code = main(["explain", "--model", MODEL, *args, "--store", str(tmp_path / "store")])
        err = " ".join(capsys.readouterr().err.split())
        assert code == 1 and re.search(message, err), (args, err)
        assert "resume" not in err and "Traceback" not in err
    assert not (tmp_path / "store").exists() or not Store.open(tmp_path / "store").runs().num_rows

    assert main(["explain", "--model", MODEL, "--data", "builtin:fashion-canvas", "--limit", "0",
                 "--store", str(tmp_path / "store")]) == 0
    assert "nothing to do" in capsys.readouterr().out
