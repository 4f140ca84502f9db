"""What the training scripts of the built-in models share: the command line, the warm-up + cosine learning-rate
schedule, and the provenance written to training.json.

Every script trains on a Fashion-MNIST generator (training items, new layouts) and scores on held-out samples
built from the bundled *test* items; `--smoke` runs one small epoch on the bundled items to check the script.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch
import transformers

ZOO = Path(__file__).resolve().parents[1] / "models" / "zoo"


def training_parser(doc: str, default_out: str | Path, *, train_n: int, test_n: int, epochs: int,
                    batch_size: int = 64, lr: float = 1e-3, smoke_train_n: int = 256) -> argparse.ArgumentParser:
    """The options every script takes; a script adds its own, then calls `parse_training_args`."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(default_out))
    p.add_argument("--train-n", type=int, default=train_n, help="training samples per epoch")
    p.add_argument("--test-n", type=int, default=test_n)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-split", default="train", choices=("train", "test"),
                   help="Fashion-MNIST items to paste: train (the full set, from Debian's dataset-fashion-mnist) "
                   "or test (the bundled subset; only for --smoke)")
    p.add_argument("--smoke", action="store_true",
                   help=f"{smoke_train_n} samples of the bundled items, 1 epoch, into --out: checks the script runs")
    p.set_defaults(smoke_train_n=smoke_train_n)
    return p


def parse_training_args(p: argparse.ArgumentParser, argv=None, *, smoke_test_n: int) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.smoke:
        if args.out == p.get_default("out"):
            p.error("--smoke needs --out (it must not overwrite the shipped model)")
        args.train_n, args.test_n, args.epochs, args.train_split = args.smoke_train_n, smoke_test_n, 1, "test"
    return args


def parse_args(doc: str, zoo_name: str, argv=None, *, train_n: int, test_n: int, epochs: int, batch_size: int,
               lr: float, smoke_train_n: int) -> argparse.Namespace:
    """The command line of the captioner and DETR scripts (fresh samples every epoch, --threads)."""
    p = training_parser(doc, ZOO / zoo_name, train_n=train_n, test_n=test_n, epochs=epochs, batch_size=batch_size,
                        lr=lr, smoke_train_n=smoke_train_n)
    p.add_argument("--threads", type=int, default=1)
    return parse_training_args(p, argv, smoke_test_n=32)


def cosine_schedule(optimizer, args) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 5% of the steps, then cosine decay to 0."""
    steps = args.epochs * math.ceil(args.train_n / args.batch_size)
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def provenance(args, started: float, model, threads: int) -> dict:
    """The training.json fields every model records besides its data and scores."""
    return {"command": "python " + " ".join(sys.argv), "seconds": round(time.perf_counter() - started, 1),
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
            "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "machine": f"{platform.machine()}, {threads} thread{'s' if threads != 1 else ''}",
            "date": date.today().isoformat()}


def write_training_json(out: Path, report: dict) -> dict:
    (Path(out) / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def write_report(out: Path, args, started: float, model, generator: str, test_ref: str, scores: dict) -> dict:
    """training.json of a script that draws fresh samples every epoch (seeds seed + 1 ...)."""
    return write_training_json(out, {
        "train": f"builtin:{generator}?split={args.train_split}&n={args.train_n}&seed={args.seed + 1}.."
                 f"{args.seed + args.epochs} (fresh samples every epoch)",
        "test": test_ref, **scores, **provenance(args, started, model, args.threads)})


def write_preprocessor(out: Path, size: int, mean: float, std: float) -> None:
    (Path(out) / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [mean], "image_std": [std], "do_normalize": True, "size": size}, indent=2) + "\n")


@torch.no_grad()
def image_accuracy(model, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of a Hugging Face image classifier (eval mode) on normalised pixels."""
    model.eval()
    hits = sum((model(pixel_values=pixels[i:i + batch_size]).logits.argmax(-1) == labels[i:i + batch_size]).sum()
               .item() for i in range(0, len(labels), batch_size))
    return hits / len(labels)
