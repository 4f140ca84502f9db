"""Train builtin:fashion-vit: a small stock ViTForImageClassification on fashion-canvas.

Seeded and reproducible on CPU. Writes a Hugging Face checkpoint folder (safetensors), the
preprocessor_config.json that `models.load` reads, and training.json with how it was made and how
well it scores on the held-out test split (canvases built from Fashion-MNIST *test* items only).

    python scripts/train_fashion_vit.py                 # full run, writes models/zoo/fashion-vit
    python scripts/train_fashion_vit.py --smoke --out /tmp/vit   # a few steps, for tests
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from attn_audit.storage.datasets import FashionCanvas
from training_common import (
    ZOO,
    cosine_schedule,
    image_accuracy,
    parse_training_args,
    provenance,
    training_parser,
    write_preprocessor,
    write_training_json,
)

MEAN, STD = 0.5, 0.5  # pixel normalisation, written to preprocessor_config.json


def arrays(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    images = np.stack([dataset[i]["image"] for i in range(len(dataset))])
    labels = np.array([dataset[i]["label"] for i in range(len(dataset))])
    pixels = (torch.from_numpy(images).float().div(255.0).sub(MEAN).div(STD)).unsqueeze(1)
    return pixels, torch.from_numpy(labels)


def build_model(labels: list[str]) -> transformers.ViTForImageClassification:
    config = transformers.ViTConfig(
        image_size=64, patch_size=8, num_channels=1, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=256, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    return transformers.ViTForImageClassification(config)


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
    schedule = cosine_schedule(optimizer, args)  # len(y_train) == args.train_n
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
              f"{image_accuracy(model, x_test, y_test):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    test_accuracy = image_accuracy(model, x_test, y_test)
    model.save_pretrained(args.out, safe_serialization=True)
    write_preprocessor(args.out, 64, MEAN, STD)
    report = {"train": train_set.ref, "test": test_set.ref, "test_accuracy": round(test_accuracy, 4),
              "fresh_canvases": args.fresh_canvases, "canvas_seed": canvas_seed,
              **provenance(args, started, model, args.threads)}
    if previous is not None:
        report["continued_from"] = previous
    return write_training_json(args.out, report)


def main(argv=None) -> None:
    p = training_parser(__doc__, ZOO / "fashion-vit", train_n=60_000, test_n=2_000, epochs=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--init", help="continue from a checkpoint folder this script wrote (its training.json is kept "
                   "in the new one); the learning rate schedule starts again")
    p.add_argument("--canvas-seed", type=int, help="seed of the first epoch's training canvases (default --seed; "
                   "give a continued run new ones)")
    p.add_argument("--fresh-canvases", action="store_true",
                   help="draw new canvases (placements, clutter) every epoch instead of reusing epoch 1's")
    print(json.dumps(train(parse_training_args(p, argv, smoke_test_n=64)), indent=2))


if __name__ == "__main__":
    main()
