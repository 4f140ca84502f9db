#!/usr/bin/env python
"""Cost of the perturbation tests (models.perturbation) against two yardsticks, per sample:

  1. batched: `perturbation_curves` for a batch — both directions × every step, rows sorted by length and cut
     into passes of ≤ --max-rows;
  2. floor: (2 × steps) × one batched forward of the unperturbed batch (no_grad) — what the test would cost if
     every step were a plain forward of the full input;
  3. per-sample loop: the same removals, one (sample, direction, step) per forward (batch 1).

All three run the attention the perturbation passes run (SDPA where the model has it: models.engine.
attention_registry.sdpa); the floor is also timed with the eager attention the model is loaded with, which the
passes ran before they switched.

Targets (issue 6): batched / floor ≤ 1.2×; loop / batched ≥ 5×. Median of --repeats timed calls after one
warm-up; preprocessing and maps are made outside the timing.

  python bench/bench_perturbation.py                        # canvas-sized ViT, drop, CPU, 1 thread
  python bench/bench_perturbation.py --model text --samples 64
  python bench/bench_perturbation.py --mode zero --device cuda --samples 256 --batch 256 --max-rows 4096
  python bench/bench_perturbation.py --smoke                # 4 samples, one repetition (the test suite runs it)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attn_audit.models.engine.attention_registry import sdpa  # noqa: E402
from attn_audit.models.perturbation import keep_masks, perturbation_curves, place_maps  # noqa: E402
from attn_audit.tasks.evaluate.settings import IMAGE_STEPS, TEXT_STEPS  # noqa: E402

from attn_audit import models  # noqa: E402
from tests import tiny_models  # noqa: E402


def build(kind: str, device: str):
    """(model, samples factory, modality, steps): a small ViT (64x64 grey, patch 8, hidden 64: the first
    builtin:fashion-vit's shape, which the README's numbers used), or the tiny BERT."""
    if kind == "text":
        return tiny_models.wrapped("bert", device), lambda n: tiny_models.texts(n), "text", TEXT_STEPS
    cfg = T.ViTConfig(image_size=64, patch_size=8, num_channels=1, hidden_size=64, num_hidden_layers=4,
                      num_attention_heads=4, intermediate_size=128, num_labels=10)
    torch.manual_seed(0)
    m = models.wrap(T.ViTForImageClassification(cfg), device=device)
    rng = np.random.default_rng(0)
    return m, lambda n: [{"id": str(i), "image": rng.integers(0, 256, (64, 64), np.uint8)} for i in range(n)], \
        "image", IMAGE_STEPS


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=("vit", "text"), default="vit")
    p.add_argument("--mode", choices=("drop", "zero"), default="drop")
    p.add_argument("--samples", type=int, default=32, help="samples in the batch (default 32)")
    p.add_argument("--loop-samples", type=int, default=4, help="samples timed in the per-sample loop (default 4)")
    p.add_argument("--max-rows", type=int, help="rows per pass (default: by device, as the evaluation)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU (0: torch's choice)")
    p.add_argument("--smoke", action="store_true", help="4 samples, a loop of 1, one repetition: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.samples, args.loop_samples, args.repeats = 4, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    m, make, modality, steps = build(args.model, args.device)
    mode = args.mode if modality == "image" else "drop"
    batch = m.preprocess(make(args.samples)).to(m.device)
    removable = m.adapter.removable_tokens(batch, modality)
    rng = np.random.default_rng(1)
    maps = [rng.standard_normal(int(removable.shape[1])).astype(np.float32) for _ in range(args.samples)]
    targets = [0] * args.samples
    n_rows = 2 * len(steps)

    batched = timed(lambda: perturbation_curves(m, batch, modality, maps, targets, steps, mode=mode,
                                                max_rows=args.max_rows), args.repeats) / args.samples
    with torch.inference_mode():
        eager_forward = timed(lambda: m.model(**batch), args.repeats) / args.samples
        with sdpa(m.model):
            forward = timed(lambda: m.model(**batch), args.repeats) / args.samples
    k = min(args.loop_samples, args.samples)
    keep, _ = keep_masks(place_maps(maps[:k], removable[:k], batch.sample_ids[:k]), removable[:k], steps)

    def loop():
        with torch.inference_mode(), sdpa(m.model):
            for i in range(k):
                for row in keep[i].reshape(-1, keep.shape[-1]):
                    m.adapter.perturbed_logits(batch, torch.tensor([i], device=m.device), row[None], modality, mode)

    per_loop = timed(loop, args.repeats) / k
    floor = n_rows * forward
    print(f"{args.model} ({modality}, {mode}), {args.samples} samples, {len(steps)} steps × 2 directions, "
          f"device {args.device}, threads {torch.get_num_threads()}")
    print(f"  batched perturbation     {batched * 1e3:9.3f} ms/sample")
    print(f"  floor (2·steps forwards) {floor * 1e3:9.3f} ms/sample   batched / floor = {batched / floor:.2f}× "
          "(target ≤ 1.2×)")
    print(f"  floor, eager attention   {n_rows * eager_forward * 1e3:9.3f} ms/sample   eager / SDPA = "
          f"{eager_forward / forward:.2f}×")
    print(f"  per-sample loop          {per_loop * 1e3:9.3f} ms/sample   loop / batched = {per_loop / batched:.1f}× "
          "(target ≥ 5×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
