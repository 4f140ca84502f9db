"""`attn-audit explain` through the real console script, reading the Parquet tables back."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

import models
from storage.datasets import open_dataset
from tests import tiny_models

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "flows.cli"]


@pytest.fixture(scope="module")
def image_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    tiny_models.vit().save_pretrained(root / "vit")
    for i, sample in enumerate(tiny_models.images(5)):
        folder = root / "images" / ("alpha" if i % 2 else "beta")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(sample["image"]).save(folder / f"{i}.png")
    (root / "images" / "beta" / "corrupt.png").write_bytes(b"not a png")
    return root


def run_cli(*args):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_explain_an_imagefolder_writes_long_format_tables(image_world, tmp_path):
    out = tmp_path / "out"
    done = run_cli("explain", "--model", str(image_world / "vit"), "--data", f"imagefolder:{image_world / 'images'}",
                   "--method", "chefer2021", "--method", "rollout", "--batch-size", "2", "--target", "label",
                   "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout and "corrupt.png" in done.stderr
    exps = pq.read_table(out / "explanations.parquet").to_pylist()
    assert len(exps) == 5 * 2  # 5 good images × 2 methods × 1 modality
    assert {r["modality"] for r in exps} == {"image"} and all(r["shape"] == [4, 4] for r in exps)
    errors = pq.read_table(out / "errors.parquet").to_pylist()
    assert [(e["sample_id"], e["stage"]) for e in errors] == [("beta/corrupt.png", "decode")]
    preds = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(preds) == 5 and all(p["target_label"] == p["label"] for p in preds)

    # The stored maps are exactly what the Python API computes.
    m = models.load(str(image_world / "vit"), device="cpu")
    dataset = open_dataset(f"imagefolder:{image_world / 'images'}")
    sample = next(dataset[i] for i in range(len(dataset)) if dataset.sample_id(i) == exps[0]["sample_id"])
    target = m.label_names.index(sample["label"])
    direct = models.explain(m, m.preprocess([sample]), method="chefer2021", target=target)[0]
    stored = next(r for r in exps if r["sample_id"] == sample["id"] and r["method"] == "chefer2021")
    np.testing.assert_allclose(np.asarray(stored["relevance"], np.float32), direct.relevance["image"].ravel(),
                               atol=1e-6)


def test_explain_jsonl_text_keeps_tokens_and_special_flags(tmp_path):
    model, tok = tiny_models.text_model("bert")
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    rows = [{"id": "r1", "text": "the cat sat", "label": "alpha"}, {"id": "r2", "text": "", "label": "beta"},
            {"id": "r3", "text": "a big red house", "label": "gamma"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    done = run_cli("explain", "--model", str(tmp_path / "bert"), "--data", f"jsonl:{tmp_path / 'data.jsonl'}",
                   "--out", str(tmp_path / "out"), "--quiet")
    assert done.returncode == 0, done.stderr
    table = pq.read_table(tmp_path / "out" / "explanations.parquet").to_pylist()
    assert [r["sample_id"] for r in table] == ["r1", "r3"]
    assert table[0]["tokens"] == ["[CLS]", "the", "cat", "sat", "[SEP]"]
    assert table[0]["special"] == [True, False, False, False, True]
    assert table[0]["relevance"][0] == 0.0
    errors = pq.read_table(tmp_path / "out" / "errors.parquet").to_pylist()
    assert [e["sample_id"] for e in errors] == ["r2"]
    assert "line 2" in errors[0]["message"] and "text is empty" in errors[0]["message"]


def test_cli_errors_are_one_clear_line(tmp_path):
    done = run_cli("explain", "--model", "builtin:nope", "--data", f"jsonl:{tmp_path / 'none.jsonl'}")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    done = run_cli("explain", "--model", str(tmp_path), "--data", "builtin:fashion-canvas", "--method", "lrp")
    assert done.returncode == 1 and "unknown method 'lrp'" in done.stderr
    help_text = run_cli("explain", "--help").stdout
    for flag in ("--model", "--data", "--method", "--target", "--batch-size", "--limit", "--out"):
        assert flag in help_text
