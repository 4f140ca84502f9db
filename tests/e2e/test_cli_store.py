"""`attn-audit runs | query | show | store`: a real store, the real parser and handlers (in-process, plus one
run through the console script)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
from attn_audit.flows.cli import main
from attn_audit.storage import tables
from attn_audit.storage.store import RunSpec, Store
from PIL import Image

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An imagefolder dataset and a store holding a run over it (image maps) and a text run."""
    root = tmp_path_factory.mktemp("cli_store")
    for i in range(4):
        folder = root / "images" / ("alpha" if i % 2 else "beta")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((32, 48, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    from attn_audit.storage.datasets import open_dataset

    dataset = open_dataset(f"imagefolder:{root / 'images'}")
    store = Store.open(root / "store", create=True)
    image_run = store.begin_run(RunSpec("builtin:tiny", "m" * 64, dataset.ref, dataset.fingerprint(),
                                        ("chefer2021", "rollout"), {"target": "predicted"}, len(dataset), 2))
    ids = [dataset.sample_id(i) for i in range(len(dataset))]
    for shard in range(image_run.num_shards):
        lo, hi = image_run.shard_range(shard)
        exps = [SimpleNamespace(sample_id=ids[i], method=m, target=1, target_label="beta", score=2.0, probability=0.7,
                                prediction=1, tokens={}, special={}, error=None,
                                relevance={"image": np.arange(12, dtype=np.float32).reshape(3, 4) * (i + 1)})
                for i in range(lo, hi) for m in ("chefer2021", "rollout")]
        store.commit_shard(image_run.run_id, shard, explanations=tables.explanation_table(exps, image_run.run_id),
                           predictions=tables.prediction_table(exps, image_run.run_id))
    store.finish_run(image_run.run_id)
    text_run = store.begin_run(RunSpec("builtin:bert", "t" * 64, "jsonl:/gone.jsonl", "x" * 64, ("chefer2021",),
                                       {}, 1, 8))
    exp = SimpleNamespace(sample_id="r1", method="chefer2021", target=0, target_label="alpha", score=1.0,
                          probability=0.9, prediction=0,
                          relevance={"text": np.array([0.0, 0.9, -0.3, 0.0], np.float32)},
                          tokens={"text": ["[CLS]", "great", "<film>", "[SEP]"]},
                          special={"text": np.array([True, False, False, True])}, error=None)
    store.commit_shard(text_run.run_id, 0, explanations=tables.explanation_table([exp], text_run.run_id),
                       predictions=tables.prediction_table([exp], text_run.run_id))
    store.finish_run(text_run.run_id)
    return SimpleNamespace(root=root, store=root / "store", image_run=image_run.run_id, text_run=text_run.run_id,
                           ids=ids)


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_runs_lists_status_counts_and_methods_through_the_console_script(world):
    env = {**os.environ, "COLUMNS": "250"}
    done = subprocess.run([sys.executable, "-m", "attn_audit.flows.cli", "runs", "--store", str(world.store)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert world.image_run in done.stdout and world.text_run in done.stdout
    assert "completed" in done.stdout and "chefer2021, rollout" in done.stdout and "4/4" in done.stdout


def test_query_formats(world, capsys, tmp_path):
    sql = "SELECT sample_id, method, relevance FROM explanations WHERE modality = 'image' ORDER BY sample_id, method"
    code, out, _ = cli(capsys, "query", "--store", str(world.store), "--format", "json", sql)
    rows = json.loads(out)
    assert code == 0 and len(rows) == 8 and rows[0]["relevance"] == list(range(12))
    code, out, _ = cli(capsys, "query", "--store", str(world.store), "--format", "csv", sql)
    parsed = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(parsed) == 8 and json.loads(parsed[0]["relevance"]) == list(range(12))
    code, out, _ = cli(capsys, "query", "--store", str(world.store), "SELECT run_id, status FROM runs")
    assert code == 0 and world.image_run in out
    target = tmp_path / "maps.parquet"
    code, _, _ = cli(capsys, "query", "--store", str(world.store), "--format", "parquet", "--output", str(target), sql)
    assert code == 0 and pq.read_table(target).num_rows == 8
    code, _, err = cli(capsys, "query", "--store", str(world.store), "--format", "parquet", sql)
    assert code == 1 and "needs --output" in err


@pytest.mark.parametrize("sql, message", [
    ("DELETE FROM explanations", "read-only here: DELETE statements are refused"),
    ("COPY runs TO 'x.csv'", "read-only here: COPY statements are refused"),
    ("SELEC 1", "SQL syntax error"),
    ("SELECT nope FROM runs", "nope"),
])
def test_query_errors_are_one_line_without_traceback(world, capsys, sql, message):
    code, out, err = cli(capsys, "query", "--store", str(world.store), sql)
    assert code == 1 and message in " ".join(err.split()) and "Traceback" not in err


def test_show_draws_an_overlay_over_the_input_image(world, capsys, tmp_path):
    target = tmp_path / "show.png"
    code, out, err = cli(capsys, "show", "--store", str(world.store), "--run", world.image_run[:8],
                         "--sample", world.ids[1], "--out", str(target))
    assert code == 0, err
    image = Image.open(target)
    assert image.size[0] > 3 * 224  # input + two methods side by side, enlarged from 48 px
    code, _, err = cli(capsys, "show", "--store", str(world.store), "--run", world.image_run, "--sample", world.ids[1],
                       "--method", "rollout", "--out", str(tmp_path / "one.png"))
    assert code == 0 and Image.open(tmp_path / "one.png").size[0] < image.size[0]


def test_show_colours_tokens_in_the_terminal_and_in_html(world, capsys, tmp_path):
    code, out, err = cli(capsys, "show", "--store", str(world.store), "--run", world.text_run, "--sample", "r1",
                         "--out", str(tmp_path / "text"))
    assert code == 0, err
    assert "great" in out and "<film>" in out
    page = (tmp_path / "text.html").read_text()
    assert "great" in page and "&lt;film&gt;" in page and "#ff0000" in page


@pytest.mark.parametrize("args, message", [
    (["--run", "zzzz", "--sample", "x"], "run 'zzzz' is not in the store"),
    (["--run", "IMAGE", "--sample", "nope.png"], "sample 'nope.png' is not in run"),
    (["--run", "IMAGE", "--sample", "beta/0.png", "--method", "lrp"], "no method 'lrp'"),
])
def test_show_errors(world, capsys, args, message):
    args = [world.image_run if a == "IMAGE" else a for a in args]
    code, _, err = cli(capsys, "show", "--store", str(world.store), *args)
    assert code == 1 and message in " ".join(err.split())


def test_a_plain_file_or_missing_store_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = cli(capsys, "runs", "--store", str(tmp_path / "file"))
    assert code == 1 and "is a file" in " ".join(err.split())
    code, _, err = cli(capsys, "query", "--store", str(tmp_path / "none"), "SELECT 1")
    assert code == 1 and "no store at" in " ".join(err.split())


def test_store_optimize_and_vacuum(world, capsys, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(world.store, copy)
    before = Store.open(copy).sql("SELECT count(*) AS n FROM explanations").to_pylist()
    code, out, err = cli(capsys, "store", "optimize", "--store", str(copy))
    assert code == 0 and "explanations" in out, err
    code, out, err = cli(capsys, "store", "vacuum", "--store", str(copy), "--retention-hours", "0")
    assert code == 0 and "deleted" in out, err
    assert Store.open(copy).sql("SELECT count(*) AS n FROM explanations").to_pylist() == before
