"""Many targets per sample: all of them from one pass vs one forward + backward pass per target.

- Captioning: builtin:fashion-captioner on its own captions (k = 4 words), and its architecture with random
  weights made to generate k = 10 tokens per caption; chefer2021 for every token. Generation runs once and is
  shared by both paths (timed apart): the comparison is the teacher-forced forward, the gradients and the
  relevancy propagation.
- Detection: a random-weight DETR (96 px, 12x12 feature grid, 10 queries) with threshold 0, so every query
  is a detection (k = 10 per image).

The per-target path is the same engine asked for one target per sample at a time: k passes, pass j a forward +
backward for the j-th target of every sample in the batch; so the two differ only in how targets share passes.

    OMP_NUM_THREADS=1 python bench/bench_multitarget.py [--batch 8] [--repeats 3]
    python bench/bench_multitarget.py --smoke               # batch 2, one repetition (the test suite runs it)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attn_audit.models.capture import CapturePlan  # noqa: E402
from attn_audit.models.images import PixelTransform  # noqa: E402
from attn_audit.models.run_capture import run_capture  # noqa: E402
from attn_audit.storage.datasets import open_dataset  # noqa: E402

from attn_audit import models  # noqa: E402

METHOD = models.methods.get_method("chefer2021")
CAPTION_TOKENS = 10


def explain_rows(adapter, batch, slot=None):
    """chefer2021 rows from one pass for every target (slot None) or only each sample's `slot`-th target."""
    select = adapter.own_targets

    def chosen(b, logits):
        targets = select(b, logits)
        return targets if slot is None else targets.take((targets.slot == slot).nonzero().squeeze(1).tolist())

    with mock.patch.object(adapter, "own_targets", chosen):
        result = run_capture(adapter, batch, CapturePlan(False, METHOD.needs))
        METHOD.attribute(result.capture)
    return result.targets


def compare(adapter, batch, repeats: int) -> tuple[float, float, int, int]:
    """(seconds all targets in one pass, seconds k passes — pass j explains every sample's j-th target —,
    targets, k = most targets of one sample)."""
    targets = explain_rows(adapter, batch)
    k = int(targets.slot.max()) + 1
    one = min(_timed(lambda: explain_rows(adapter, batch)) for _ in range(repeats))
    per = min(_timed(lambda: [explain_rows(adapter, batch, j) for j in range(k)]) for _ in range(repeats))
    return one, per, len(targets), k


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def captioner(batch_size: int, tokens: int | None):
    """builtin:fashion-captioner (its own captions: 4 words), or with `tokens` its architecture with random
    weights, a longer position table and the end token suppressed, so that every caption has `tokens` tokens."""
    m = models.load("builtin:fashion-captioner", device="cpu")
    if tokens is not None:
        config = m.model.config
        config.decoder.max_position_embeddings = tokens + 2
        torch.manual_seed(0)
        m = models.wrap(transformers.VisionEncoderDecoderModel(config=config), device="cpu",
                        tokenizer=m.adapter.tokenizer, transform=m.adapter.transform, max_new_tokens=tokens)
        m.model.generation_config.min_new_tokens = tokens
        m.model.generation_config.suppress_tokens = list(m.adapter.tokenizer.all_special_ids)
    data = open_dataset(f"builtin:fashion-caption?split=test&n={batch_size}&seed=3")
    batch = m.preprocess([data[i] for i in range(batch_size)])
    started = time.perf_counter()
    with torch.no_grad():
        generated = m.model.generate(pixel_values=batch["pixel_values"], do_sample=False,
                                     max_new_tokens=m.adapter.max_new_tokens)
    generation = time.perf_counter() - started
    m.model.generate = lambda *a, **k: generated  # shared by both paths
    return m.adapter, batch, generation


def detr(batch_size: int):
    backbone = {"model_type": "resnet", "embedding_size": 16, "hidden_sizes": [16, 32], "depths": [1, 1],
                "layer_type": "basic", "out_features": ["stage2"], "num_channels": 3}
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=64,
        encoder_layers=3, decoder_layers=3, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_queries=10, num_labels=10, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    m = models.wrap(transformers.DetrForObjectDetection(config), device="cpu",
                    transform=PixelTransform(96, 3, (0.5,) * 3, (0.5,) * 3), threshold=0.0)
    rng = np.random.default_rng(0)
    images = [{"id": str(i), "image": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)} for i in range(batch_size)]
    return m.adapter, m.preprocess(images)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="batch 2, one repetition: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.batch, args.repeats = 2, 1
    torch.set_num_threads(args.threads)
    print(f"{platform.machine()}, {args.threads} thread(s), torch {torch.__version__}, batch {args.batch}, "
          f"best of {args.repeats}")
    rows = []
    for name, tokens in (("fashion-captioner (trained)", None), (f"captioner, random, {CAPTION_TOKENS} tokens",
                                                                CAPTION_TOKENS)):
        adapter, batch, generation = captioner(args.batch, tokens)
        rows.append((name, *compare(adapter, batch, args.repeats)))
        print(f"  {name}: greedy generation {generation * 1000:.0f} ms (shared, not in the times below)")
    adapter, batch = detr(args.batch)
    rows.append(("DETR (random weights)", *compare(adapter, batch, args.repeats)))
    print(f"{'model':32s} {'targets':>8s} {'k/sample':>8s} {'one pass':>10s} {'k passes':>11s} {'ratio':>6s}")
    for name, one, per, total, k in rows:
        print(f"{name:32s} {total:8d} {k:8d} {one * 1000:8.0f} ms {per * 1000:8.0f} ms {one / per:6.2f}")


if __name__ == "__main__":
    main()
