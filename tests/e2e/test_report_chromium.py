"""The HTML report in a real browser: Debian's Chromium, headless, renders the page of an evaluated run from
its files (no server, no network). Every image must decode, the tables must be laid out, and the browser must
log no console error; a screenshot is kept beside the report for a person to look at."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from attn_audit.tasks.evaluate import EvalSettings, evaluate_run
from attn_audit.tasks.report import write_report

from tests.integration.test_evaluate import canvas_run  # noqa: F401  (a fixture: a stored tiny-ViT run)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As the machine notes advise: no sandbox as root, no GPU, and none of the background network calls that this
# closed network refuses.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--virtual-time-budget=10000", "--enable-logging=stderr", "--v=0"]
# Appended to a copy of the page: after load, the title says how many images decoded and which did not, and
# the rendered size of every table.
PROBE = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  const tables = [...document.querySelectorAll('table')].map(t => t.getBoundingClientRect().height);
  document.title = JSON.stringify({images: imgs.length, broken, tables});
});</script>"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is missing: `make test` installs Debian's chromium (apt-get install chromium)")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


def test_the_report_renders_in_headless_chromium(canvas_run, tmp_path):  # noqa: F811
    store, run_id = canvas_run
    evaluate_run(store, run_id, device="cpu", settings=EvalSettings(resamples=100))
    page = write_report(store, run_id, tmp_path / "report")

    shot = page.parent / "screenshot.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1280,4000", page.as_uri(), profile=tmp_path / "p1")
    assert shot.is_file() and shot.stat().st_size > 20_000, done.stderr[-2000:]
    console = [ln for ln in done.stderr.splitlines() if "CONSOLE" in ln or "Failed to load" in ln]
    assert not console, console

    probed = page.with_name("probe.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = chromium("--dump-dom", probed.as_uri(), profile=tmp_path / "p2").stdout
    title = re.search(r"<title>(.*?)</title>", dom, re.S)
    assert title and title.group(1).startswith("{"), dom[:2000]
    result = json.loads(title.group(1).replace("&quot;", '"'))
    assert result["broken"] == [] and result["images"] >= 6  # curves per test and quantity + example heatmaps
    assert len(result["tables"]) >= 3 and all(h > 20 for h in result["tables"])  # provenance + result tables
