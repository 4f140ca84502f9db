#!/usr/bin/env python
"""Samples/s of batched chefer2021 on a built-in VQA model against a per-sample loop (batch 1, same engine).

    python bench/bench_vqa.py                                  # builtin:fashion-lxmert, CPU, 1 thread
    python bench/bench_vqa.py --model builtin:fashion-visualbert --device cuda --batch-size 256
    python bench/bench_vqa.py --smoke                          # 8 samples, batch 4 (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attn_audit.storage.datasets import open_dataset  # noqa: E402

from attn_audit import models  # noqa: E402


def rate(m, batches) -> float:
    """Samples/s of explaining `batches` (preprocessed outside the timing), after one warm-up batch."""
    models.explain(m, batches[0], method="chefer2021")
    started = time.perf_counter()
    for batch in batches:
        models.explain(m, batch, method="chefer2021")
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    return sum(b.size for b in batches) / (time.perf_counter() - started)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:fashion-lxmert")
    p.add_argument("--samples", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--loop-samples", type=int, default=64, help="samples the per-sample loop explains")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="8 samples in batches of 4, a loop of 2: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.batch_size, args.loop_samples = 8, 4, 2
    torch.set_num_threads(args.threads)
    m = models.load(args.model, device=args.device)
    data = open_dataset(f"builtin:fashion-vqa?n={args.samples}")
    samples = [data[i] for i in range(args.samples)]
    batched = [m.preprocess(samples[i:i + args.batch_size]).to(m.device)
               for i in range(0, len(samples), args.batch_size)]
    single = [m.preprocess([s]).to(m.device) for s in samples[:args.loop_samples]]
    result = {"model": args.model, "device": str(m.device), "threads": args.threads, "batch_size": args.batch_size,
              "batched_samples_per_s": round(rate(m, batched), 1), "loop_samples_per_s": round(rate(m, single), 1),
              "machine": platform.machine(), "torch": torch.__version__}
    result["speedup"] = round(result["batched_samples_per_s"] / result["loop_samples_per_s"], 1)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
