"""The HTML report in a real browser: Debian's Chromium, headless, renders the page of an evaluated run from
its files (no server, no network), for an image, a text, a bi-modal and a many-target audit. Every image must
decode, the tables must be laid out, the summary must head the page, every plot and example must have a size,
and the browser must log no console error; a full-page screenshot is kept beside each report for a person to
look at."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.store import Store
from attn_audit.tasks.evaluate import EvalSettings, evaluate_run
from attn_audit.tasks.report import write_report
from PIL import Image

from tests import tiny_models
from tests.integration.test_evaluate import canvas_run, write_run  # noqa: F401  (canvas_run: a stored tiny-ViT run)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine notes advise: no sandbox as root, no GPU, and none of the background network calls that this
# closed network refuses.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0"]
WIDTH = 1280
# Appended to a copy of the page: after load, the title carries what the browser laid out — which images did
# not decode, the rendered size of every plot, section and example, where the summary sits, and (once unfolded)
# the size of every table.
PROBE = """<script>window.addEventListener('load', () => {
  const size = e => { const r = e.getBoundingClientRect(); return [r.width, r.height]; };
  const top = e => e ? e.getBoundingClientRect().top + window.scrollY : null;
  const imgs = [...document.images];
  const body = h => { let n = h.nextElementSibling, height = 0;  // what a heading heads, up to the next one
    for (; n && n.tagName !== 'H2'; n = n.nextElementSibling) height += size(n)[1];
    return height; };
  const found = {
    images: imgs.length,
    broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
    plots: imgs.filter(i => i.getAttribute('src').startsWith('curve-')).map(size),
    summary: [...document.querySelectorAll('table.summary')].map(t => ({top: top(t), size: size(t)})),
    sections: Object.fromEntries([...document.querySelectorAll('h2')].map(h => [h.textContent, body(h)])),
    provenance: top([...document.querySelectorAll('h2')].find(h => h.textContent === 'Provenance')),
    examples: [...document.querySelectorAll('figure')].map(f => ({size: size(f),
      images: [...f.querySelectorAll('img')].map(size), tokens: [...f.querySelectorAll('span.t')].map(size),
      targets: f.querySelectorAll('span.target').length, caption: f.querySelector('figcaption').textContent})),
    height: document.documentElement.scrollHeight};
  document.querySelectorAll('details').forEach(d => { d.open = true; });  // the folded tables, unfolded
  found.tables = [...document.querySelectorAll('table')].map(t => size(t)[1]);
  document.title = JSON.stringify(found);
});</script>"""
# kind: (model, dataset, methods) of the built-in audits; image and text runs are of tiny stock models
BUILTIN = {"bimodal": ("builtin:fashion-visualbert", "builtin:fashion-vqa?n=6", ("chefer2021", "rollout")),
           "many-target": ("builtin:fashion-captioner", "builtin:fashion-caption?n=4", ("chefer2021", "raw_attention"))}


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def text_run(folder: Path) -> tuple[Store, str]:
    """A tiny stock BERT (3 labels) on a JSONL of short texts: the examples are coloured tokens only."""
    model, tok = tiny_models.text_model("bert")
    model.save_pretrained(folder / "bert")
    tok.save_pretrained(folder / "bert")
    data = folder / "texts.jsonl"
    data.write_text("\n".join(json.dumps({**t, "label": i % 3}) for i, t in enumerate(tiny_models.texts(6))))
    store = Store.open(folder / "store", create=True)
    return store, write_run(store, str(folder / "bert"), f"jsonl:{data}", methods=("chefer2021", "attention_sum"))


@pytest.fixture(params=["image", "text", "bimodal", "many-target"])
def report(request, tmp_path) -> tuple[str, Path]:
    """(kind, the report page) of an evaluated run of that kind."""
    kind = request.param
    if kind == "image":
        store, run_id = request.getfixturevalue("canvas_run")
    elif kind == "text":
        store, run_id = text_run(tmp_path)
    else:
        store = Store.open(tmp_path / "store", create=True)
        model, data, methods = BUILTIN[kind]
        run_id = write_run(store, model, data, methods=methods)
    evaluate_run(store, run_id, device="cpu", settings=EvalSettings(resamples=100))
    return kind, write_report(store, run_id, tmp_path / "report")


def laid_out(page: Path, profile: Path) -> dict:
    """The probe's findings on `page` in Chromium, laid out as wide as the screenshot."""
    probed = page.with_name("probe.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium("--dump-dom", f"--window-size={WIDTH},1000", probed.as_uri(), profile=profile).stdout
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and title.group(1).startswith("{"), dom[:2000]
    return json.loads(title.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def check_screenshot(page: Path, height: int, profile: Path) -> None:
    """The whole page as one screenshot (window as tall as the page): drawn down to its last example, no console
    error on the way."""
    shot = page.parent / "screenshot.png"
    done = chromium(f"--screenshot={shot}", f"--window-size={WIDTH},{height}", page.as_uri(), profile=profile)
    assert shot.is_file() and shot.stat().st_size > 20_000, done.stderr[-2000:]
    console = [ln for ln in done.stderr.splitlines() if "CONSOLE" in ln or "Failed to load" in ln]
    assert not console, console
    grey = np.asarray(Image.open(shot).convert("L"))
    drawn = np.flatnonzero((grey < 200).any(axis=1))  # rows with text, lines or heatmap on them
    assert drawn.size and drawn[-1] > 0.9 * (height - 60), (drawn[-1] if drawn.size else None, height)


def check_examples(kind: str, examples: list[dict]) -> None:
    """Every example has a size; image maps where the model reads images, coloured tokens where it reads text;
    a many-target model's examples name the generated token each map explains."""
    assert len(examples) >= 4  # best and worst per method
    for ex in examples:
        assert min(ex["size"]) > 0 and all(min(s) > 0 for s in ex["images"] + ex["tokens"]), ex
        assert bool(ex["images"]) == (kind != "text"), ex  # one heatmap panel per example of an image model
        assert bool(ex["tokens"]) == (kind != "image"), ex  # the text map: inline coloured tokens
    if kind == "many-target":
        for ex in examples:  # one line per generated token, each ending in the token it explains
            assert ex["targets"] >= 2 and re.search(r"generated '\w[^']*'; map of token \d+ '\w+'", ex["caption"]), ex


def test_the_report_renders_in_headless_chromium(report, tmp_path):
    kind, page = report
    result = laid_out(page, tmp_path / "p1")
    assert result["broken"] == [] and result["images"] >= 4 + len(result["examples"]) * (kind != "text")
    assert len(result["plots"]) >= 4 and all(min(s) > 0 for s in result["plots"])  # accuracy, probability × ±
    assert len(result["tables"]) >= 4 and all(h > 20 for h in result["tables"])  # summary, provenance, results
    summary = result["summary"]  # heads the page: on its first screen, above the provenance
    assert summary and summary[0]["top"] < 600 and all(t["top"] < result["provenance"] for t in summary), summary
    assert all(min(t["size"]) > 20 for t in summary), summary
    sections = result["sections"]  # each one shows results, or says why it has none
    assert {"Summary", "Perturbation tests", "Localisation", "Sanity check", "Examples"} <= set(sections), sections
    assert all(height > 10 for height in sections.values()), sections
    check_examples(kind, result["examples"])
    check_screenshot(page, result["height"], tmp_path / "p2")
