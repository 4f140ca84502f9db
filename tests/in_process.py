"""Run a repository script in this process, as `python scripts/NAME.py ARGS` would (its own __main__ block
included): no interpreter start and no second import of torch and transformers per script. The process state a
script changes — torch's thread count and RNG, sys.argv, sys.path, the working directory — is put back afterwards."""

from __future__ import annotations

import contextlib
import io
import runpy
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / "scripts"


def run_script(path: Path, *args: str) -> str:
    """Run the script at `path` (beside its own folder on sys.path, from the repository root) with `args`; its
    standard output. A failure, or an exit status other than 0, raises with the script's output attached."""
    threads, rng, argv, search_path = torch.get_num_threads(), torch.get_rng_state(), sys.argv, list(sys.path)
    printed = io.StringIO()
    sys.path.insert(0, str(path.parent))  # e.g. the training scripts import training_common as a top-level module
    try:
        sys.argv = [str(path.relative_to(ROOT)), *args]
        with contextlib.chdir(ROOT), contextlib.redirect_stdout(printed):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as done:  # the bench scripts end with sys.exit(main())
        if done.code not in (0, None):
            raise AssertionError(f"{path.name} exited with {done.code!r}\n{printed.getvalue()[-2000:]}") from None
    except BaseException as err:
        raise AssertionError(f"{path.name} failed: {err!r}\n{printed.getvalue()[-2000:]}") from err
    finally:
        sys.argv, sys.path[:] = argv, search_path
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    return printed.getvalue()


def run_smoke(script: str, out: Path, *args: str) -> str:
    """A training script's smoke run: scripts/`script` --smoke --out `out` `args`."""
    return run_script(SCRIPTS / script, "--smoke", "--out", str(out), *args)
