"""`attn-audit explain` through the real console script, reading the store back through its API and DuckDB."""

import json
import os
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pytest
from attn_audit.flows.cli import main
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store
from deltalake import DeltaTable

from attn_audit import models
from tests import tiny_models

pytestmark = pytest.mark.e2e
CLI = [sys.executable, "-m", "attn_audit.flows.cli"]


def run_cli(*args, servers=None):
    """The console script; with `servers` (the session's RayInfo and Prefect API URL) attached to them instead of
    starting a temporary Prefect server and a local Ray of its own (the first run below keeps that default)."""
    env = {**os.environ, "COLUMNS": "250"}  # rich wraps messages at the terminal width
    if servers is not None:
        env.update(RAY_ADDRESS=servers[0].address, PREFECT_API_URL=servers[1])
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, env=env)


def test_explain_an_imagefolder_writes_a_run_into_the_store(image_world, tmp_path, ray_cluster, prefect_api):
    store_path = tmp_path / "store"
    args = ("explain", "--model", str(image_world / "vit"), "--data", f"imagefolder:{image_world / 'images'}",
            "--method", "chefer2021", "--method", "rollout", "--batch-size", "2", "--target", "label",
            "--store", str(store_path), "--quiet")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout and "corrupt.png" in done.stderr
    store = Store.open(store_path)
    (run,) = store.runs().to_pylist()
    assert run["status"] == "completed_with_errors" and run["methods"] == ["chefer2021", "rollout"]
    assert run["num_samples"] == 6 and run["explained"] == 5 and run["failed"] == 1
    assert len(run["model_fingerprint"]) == 64 and run["dataset_ref"] == f"imagefolder:{image_world / 'images'}"
    assert json.loads(run["config"])["target"] == "label" and run["code_version"].startswith("attn-audit ")
    exps = store.explanations(run_id=run["run_id"]).to_pylist()
    assert len(exps) == 5 * 2  # 5 good images × 2 methods × 1 modality
    assert {r["modality"] for r in exps} == {"image"} and all(r["shape"] == [4, 4] for r in exps)
    errors = store.errors(run_id=run["run_id"]).to_pylist()
    assert [(e["sample_id"], e["stage"]) for e in errors] == [("beta/corrupt.png", "decode")]
    preds = store.predictions(run_id=run["run_id"]).to_pylist()
    assert len(preds) == 5 and all(p["target_label"] == p["label"] for p in preds)

    # The stored maps are exactly what the Python API computes.
    m = models.load(str(image_world / "vit"), device="cpu")
    dataset = open_dataset(f"imagefolder:{image_world / 'images'}")
    sample = next(dataset[i] for i in range(len(dataset)) if dataset.sample_id(i) == exps[0]["sample_id"])
    target = m.label_names.index(sample["label"])
    direct = models.explain(m, m.preprocess([sample]), method="chefer2021", target=target)[0]
    (stored,) = store.load_explanations(run["run_id"], method="chefer2021", sample_ids=[sample["id"]])
    np.testing.assert_allclose(stored.relevance["image"], direct.relevance["image"], atol=1e-6)

    # DuckDB straight on the Delta tables (no attn-audit code) sees the same rows.
    con = duckdb.connect()
    con.register("e", DeltaTable(str(store_path / "explanations")).to_pyarrow_dataset())
    assert con.execute("SELECT count(*) FROM e WHERE method = 'rollout'").fetchone()[0] == 5
    con.close()

    # The same weights in another folder make the same run: every shard is already committed, nothing is
    # rewritten.
    version = DeltaTable(str(store_path / "explanations")).version()
    shutil.copytree(image_world / "vit", tmp_path / "vit-copy")
    again = run_cli(*[str(tmp_path / "vit-copy") if a == str(image_world / "vit") else a for a in args],
                    servers=(ray_cluster, prefect_api))
    assert again.returncode == 0, again.stderr
    assert DeltaTable(str(store_path / "explanations")).version() == version
    assert store.runs().num_rows == 1 and store.explanations().num_rows == 10


def test_explain_jsonl_text_keeps_tokens_and_special_flags(tmp_path, ray_cluster, prefect_api):
    model, tok = tiny_models.text_model("bert")
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    rows = [{"id": "r1", "text": "the cat sat", "label": "alpha"}, {"id": "r2", "text": "", "label": "beta"},
            {"id": "r3", "text": "a big red house", "label": "gamma"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    done = run_cli("explain", "--model", str(tmp_path / "bert"), "--data", f"jsonl:{tmp_path / 'data.jsonl'}",
                   "--store", str(tmp_path / "store"), "--quiet", servers=(ray_cluster, prefect_api))
    assert done.returncode == 0, done.stderr
    store = Store.open(tmp_path / "store")
    table = store.sql("SELECT sample_id, tokens, special, relevance FROM explanations ORDER BY sample_id").to_pylist()
    assert [r["sample_id"] for r in table] == ["r1", "r3"]
    assert table[0]["tokens"] == ["[CLS]", "the", "cat", "sat", "[SEP]"]
    assert table[0]["special"] == [True, False, False, False, True]
    assert table[0]["relevance"][0] == 0.0
    errors = store.sql("SELECT sample_id, message FROM errors").to_pylist()
    assert [e["sample_id"] for e in errors] == ["r2"]
    assert "line 2" in errors[0]["message"] and "text is empty" in errors[0]["message"]


def test_cli_errors_are_one_clear_line(tmp_path, capsys):
    """Through `main` in this process (refused before Prefect and Ray, as the console script would: its own
    process is the help text's below)."""

    def refused(*args) -> str:
        assert main(list(args)) == 1
        return " ".join(capsys.readouterr().err.split())  # unwrapped: rich folds at 80 columns here

    err = refused("explain", "--model", "builtin:nope", "--data", f"jsonl:{tmp_path / 'none.jsonl'}",
                  "--store", str(tmp_path / "s"))
    assert "unknown built-in model 'nope'" in err and "Traceback" not in err
    assert "unknown method 'lrpx'" in refused("explain", "--model", str(tmp_path), "--data", "builtin:fashion-canvas",
                                              "--method", "lrpx")
    (tmp_path / "plain").write_text("x")
    err = refused("explain", "--model", "builtin:fashion-vit", "--data", "builtin:fashion-canvas",
                  "--store", str(tmp_path / "plain"))
    assert "is a file" in err and "Traceback" not in err
    help_text = run_cli("explain", "--help").stdout
    for flag in ("--model", "--data", "--method", "--target", "--batch-size", "--limit", "--store"):
        assert flag in help_text
