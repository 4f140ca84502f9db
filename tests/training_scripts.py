"""Run a training script's --smoke in this process (as `python scripts/NAME.py --smoke --out DIR` would, its own
__main__ block included): no interpreter start and no second import of torch and transformers per script. The
process state a script changes — torch's thread count and RNG, sys.argv, sys.path, the working directory — is put
back afterwards."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def run_smoke(script: str, out: Path, *args: str) -> str:
    """Run scripts/`script` with --smoke --out `out` and `args`; its standard output. A failure raises with the
    script's output attached."""
    path = SCRIPTS / script
    threads, rng, argv = torch.get_num_threads(), torch.get_rng_state(), sys.argv
    printed = io.StringIO()
    sys.path.insert(0, str(SCRIPTS))  # the scripts import training_common / vqa_training as top-level modules
    try:
        sys.argv = [f"scripts/{script}", "--smoke", "--out", str(out), *args]
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(printed):
            runpy.run_path(str(path), run_name="__main__")
    except BaseException as err:  # SystemExit from argparse included
        raise AssertionError(f"{script} --smoke failed: {err!r}\n{printed.getvalue()[-2000:]}") from err
    finally:
        sys.argv = argv
        sys.path.remove(str(SCRIPTS))
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    return printed.getvalue()
