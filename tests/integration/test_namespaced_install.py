"""The wheel installs one package, `attn_audit`, and nothing generic: in a fresh virtual environment beside a
project with its own `models/` package, both import, and `import models` elsewhere fails (the name is free)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_the_wheel_installs_attn_audit_only_and_leaves_models_to_the_user(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("attn_audit-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"attn_audit", wheel.name.split("-py")[0] + ".dist-info"}
    assert any(n.startswith("attn_audit/models/zoo/fashion-vit/") for n in zipfile.ZipFile(wheel).namelist())

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    packages = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target",
                    str(packages), str(wheel)], check=True, capture_output=True, timeout=300)
    # the dependencies (torch, transformers, ...) from this environment, without its editable install of the repo
    (packages / "deps.pth").write_text("\n".join(p for p in sys.path if p.endswith("site-packages")) + "\n")

    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "__init__.py").write_text("OWNER = 'the user'\n")
    probe = ("import models, attn_audit, attn_audit.models as engine; "
             "assert models.OWNER == 'the user'; "
             f"assert engine.__file__.startswith({str(packages)!r}); "
             "m = attn_audit.load('builtin:fashion-vit', device='cpu'); print(type(m).__name__)")
    done = subprocess.run([python, "-c", probe], cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "LoadedModel", done.stderr[-2000:]

    elsewhere = subprocess.run([python, "-c", "import models"], cwd=tmp_path, capture_output=True, text=True)
    assert elsewhere.returncode != 0 and "No module named 'models'" in elsewhere.stderr
