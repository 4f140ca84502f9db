"""Train builtin:fashion-vit: a small stock ViTForImageClassification on fashion-canvas.

Seeded and reproducible on CPU. Writes a Hugging Face checkpoint folder (safetensors), the
preprocessor_config.json that `models.load` reads, and training.json with how it was made and how
well it scores on the held-out test split (canvases built from Fashion-MNIST *test* items only).

    python scripts/train_fashion_vit.py                 # full run, writes models/zoo/fashion-vit
    python scripts/train_fashion_vit.py --smoke --out /tmp/vit   # a few steps, for tests
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

import numpy as np
import torch
import transformers

from storage.datasets import FashionCanvas

ROOT = Path(__file__).resolve().parents[1]
MEAN, STD = 0.5, 0.5  # pixel normalisation, written to preprocessor_config.json


def arrays(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([dataset[i]["image"] for i in range(len(dataset))])
    labels = np.array([dataset[i]["label"] for i in range(len(dataset))])
    pixels = (torch.from_numpy(images).float().div(255.0).sub(MEAN).div(STD)).unsqueeze(1)
    return pixels, torch.from_numpy(labels)


def build_model(labels: list[str]) -> transformers.ViTForImageClassification:
    config = transformers.ViTConfig(
        image_size=64, patch_size=8, num_channels=1, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    return transformers.ViTForImageClassification(config)


@torch.no_grad()
def accuracy(model, pixels, labels, batch_size=500) -> float:
    model.eval()
    hits = sum((model(pixel_values=pixels[i:i + batch_size]).logits.argmax(-1) == labels[i:i + batch_size]).sum()
               .item() for i in range(0, len(labels), batch_size))
    return hits / len(labels)


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    canvas_seed = args.seed if args.canvas_seed is None else args.canvas_seed
    train_set = FashionCanvas(split=args.train_split, n=args.train_n, seed=canvas_seed)
    test_set = FashionCanvas(split="test", n=args.test_n, seed=args.seed)
    x_train, y_train = arrays(train_set)
    x_test, y_test = arrays(test_set)
    # --init continues from a checkpoint of this script (a second cosine cycle), recording the first run's report
    model = transformers.ViTForImageClassification.from_pretrained(args.init, use_safetensors=True) if args.init \
        else build_model(train_set.label_names)
    previous = json.loads((Path(args.init) / "training.json").read_text()) if args.init else None
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    steps = args.epochs * math.ceil(len(y_train) / args.batch_size)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        if args.fresh_canvases and epoch > 0:  # same items, new placements and clutter: translation diversity
            x_train, y_train = arrays(FashionCanvas(split=args.train_split, n=args.train_n, seed=canvas_seed + epoch))
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = torch.nn.functional.cross_entropy(model(pixel_values=x_train[idx]).logits, y_train[idx],
                                                     label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, test accuracy "
              f"{accuracy(model, x_test, y_test):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    test_accuracy = accuracy(model, x_test, y_test)
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    (out / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [MEAN], "image_std": [STD], "do_normalize": True, "size": 64}, indent=2) + "\n")
    report = {
        "command": "python " + " ".join(sys.argv), "seconds": round(time.perf_counter() - started, 1),
        "train": train_set.ref, "test": test_set.ref, "test_accuracy": round(test_accuracy, 4),
        "epochs": args.epochs, "fresh_canvases": args.fresh_canvases, "batch_size": args.batch_size,
        "lr": args.lr, "seed": args.seed, "canvas_seed": canvas_seed,
        "parameters": sum(p.numel() for p in model.parameters()), "torch": torch.__version__,
        "transformers": transformers.__version__, "machine": f"{platform.machine()}, {args.threads} threads",
        "date": date.today().isoformat(),
    }
    if previous is not None:
        report["continued_from"] = previous
    (out / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "models" / "zoo" / "fashion-vit"))
    p.add_argument("--train-n", type=int, default=60_000)
    p.add_argument("--test-n", type=int, default=2_000)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-split", default="train", choices=("train", "test"),
                   help="Fashion-MNIST items to paste: train (the full set, from Debian's dataset-fashion-mnist) "
                   "or test (the bundled subset; only for --smoke)")
    p.add_argument("--init", help="continue from a checkpoint folder this script wrote (its training.json is kept "
                   "in the new one); the learning rate schedule starts again")
    p.add_argument("--canvas-seed", type=int, help="seed of the first epoch's training canvases (default --seed; "
                   "give a continued run new ones)")
    p.add_argument("--fresh-canvases", action="store_true",
                   help="draw new canvases (placements, clutter) every epoch instead of reusing epoch 1's")
    p.add_argument("--smoke", action="store_true",
                   help="256 samples of the bundled items, 1 epoch, into --out: checks the script runs")
    args = p.parse_args(argv)
    if args.smoke:
        if args.out == p.get_default("out"):
            p.error("--smoke needs --out (it must not overwrite the shipped model)")
        args.train_n, args.test_n, args.epochs, args.train_split = 256, 64, 1, "test"
    print(json.dumps(train(args), indent=2))


if __name__ == "__main__":
    main()
