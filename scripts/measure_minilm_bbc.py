#!/usr/bin/env python
"""Accuracy of the shipped builtin:minilm-bbc on the 442 BBC test articles as it reads them (its head config's
max_length, 512 tokens; longer articles truncated). Prints correct / total and the seconds it took."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attn_audit.storage.datasets import open_dataset  # noqa: E402

from attn_audit import models  # noqa: E402


def main() -> int:
    torch.set_num_threads(2)
    test = open_dataset("builtin:bbc-news?split=test")
    samples = [test[i] for i in range(len(test))]
    m = models.load("builtin:minilm-bbc", device="cpu")
    right, started = 0, time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, len(samples), 16):
            chunk = samples[lo:lo + 16]
            logits = m.model(**dict(m.preprocess(chunk))).logits
            right += int((logits.argmax(1).numpy() == np.array([s["label"] for s in chunk])).sum())
    print(f"{right}/{len(samples)} = {right / len(samples):.4f} test accuracy at {m.adapter.encoder.max_length} "
          f"tokens ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
