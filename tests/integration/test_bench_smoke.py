"""Every benchmark script runs (tiny sizes) so that none rots between the sessions that measure with them."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(*args):
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_bench_memory_smoke():
    out = run("bench/bench_memory.py", "--smoke")
    assert "fused÷floor" in out and out.count("x") >= 4


def test_bench_engine_tiny():
    out = run("bench/bench_engine.py", "--model", "tiny-vit", "--batch-size", "4", "--loop-samples", "2",
              "--repeats", "1", "--warmup", "0", "--threads", "1")
    assert "fused / eager capture" in out and "WARNING" not in out
