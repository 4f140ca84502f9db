"""Peak memory of one benchmark case's pass: a bench script's `setup(device=..., **kwargs)` builds the model and the
input and returns the pass (a function of no arguments); it runs once first, since allocator pools and lazy
initialisation are not the pass's own memory, then once measured.

CPU: each case runs in a fresh process, so that it cannot inherit another's allocations: the peak resident set
(Linux VmHWM, reset through /proc/self/clear_refs once the model and the input are built) minus the resident set at
that point, what the pass itself added. That process has glibc serve every allocation above 64 kB from mmap and give
it back on free, so that the peak follows the live tensors instead of what glibc's arenas kept (without it the same
case varies by ±40% between runs); the page faults this costs slow a pass down by ~40%, so never time it there.
CUDA: torch.cuda.max_memory_allocated minus what was allocated when the pass started, in the calling process.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

Setup = Callable[..., Callable[[], object]]


def peak_bytes(setup: Setup, device: str, **kwargs) -> int:
    if device.startswith("cuda"):
        import torch

        gc.collect()
        torch.cuda.empty_cache()
        return in_this_process(setup, device, kwargs)
    script = Path(inspect.getfile(setup))
    code = (f"import json, sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import peak_memory, "
            f"{script.stem} as b; print(peak_memory.in_this_process(b.{setup.__name__}, *json.loads(sys.argv[1])))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps([device, kwargs])], capture_output=True, text=True,
                          cwd=script.parents[1], env=os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"})
    if done.returncode:
        raise RuntimeError(f"{script.stem}.{setup.__name__}({kwargs}) failed:\n{done.stderr[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1])


def in_this_process(setup: Setup, device: str, kwargs: dict) -> int:
    run = setup(device=device, **kwargs)
    run()
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    base = rss_bytes("VmRSS")
    run()
    return rss_bytes("VmHWM") - base


def rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")
