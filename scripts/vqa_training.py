"""What train_fashion_visualbert.py and train_fashion_lxmert.py share: fashion-vqa as tensors, the word-level
tokenizer, the seeded training loop and the checkpoint folder (safetensors, vocab, regions.json, training.json).
train_fashion_clip.py uses its tokenizer, schedule, per-epoch data and command line.

The model is fed through its attn-audit adapter (`adapter.forward`), so training sees exactly the inputs that
explaining will: the same tokenizer, the same grid-cell region features.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import transformers
from attn_audit.models.adapters import adapter_class
from attn_audit.models.regions import RegionGrid
from attn_audit.storage.datasets import FashionVqa
from training_common import ZOO, cosine_schedule, parse_training_args, provenance, training_parser, write_training_json

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GRID = 2  # the fashion-vqa canvas is a 2x2 grid of 28x28 items: one region per item cell
CANVAS = 56
# Larger than BERT's 0.02: with near-zero query/key weights attention starts uniform and the models sat at the
# answer priors (~30%) for thousands of steps; at 0.1 they learn to pick the asked-for cell within ~1,000.
INIT = 0.1


def word_tokenizer(questions: list[str]) -> transformers.BertTokenizer:
    """A word-level BERT tokenizer over every word of the questions (the generator's templates and classes)."""
    words = sorted({w for q in questions for w in q.split()})
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate([*SPECIAL, *words])}, model_max_length=16)


def vqa_tensors(data: FashionVqa, tokenizer, grid: RegionGrid) -> dict[str, torch.Tensor]:
    samples = [data[i] for i in range(len(data))]
    enc = tokenizer([s["text"] for s in samples], padding=True, return_tensors="pt")
    feats = torch.from_numpy(grid.cut(np.stack([s["image"] for s in samples])))
    boxes = torch.from_numpy(grid.boxes()).expand(len(samples), -1, -1)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "token_type_ids": enc["token_type_ids"], "region_features": feats, "region_boxes": boxes,
            "region_mask": torch.ones(feats.shape[:2], dtype=torch.long),
            "labels": torch.tensor([s["label"] for s in samples])}


def _rows(tensors: dict, idx) -> dict:
    return {k: v[idx] for k, v in tensors.items() if k != "labels"}


def optimizer_and_schedule(model, args):
    """AdamW with the shared warm-up + cosine schedule."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    return optimizer, cosine_schedule(optimizer, args)


def epoch_data(args, train_sets: list, make):
    """Each epoch's training tensors: fresh scenes every epoch with --fresh-data (more variety, same cost),
    else the first set's, made once."""
    data = None
    for epoch in range(args.epochs):
        if data is None or args.fresh_data:
            data = make(train_sets[epoch if args.fresh_data else 0])
        yield data


@torch.no_grad()
def accuracy(adapter, tensors, batch_size=500) -> float:
    adapter.model.eval()
    n = len(tensors["labels"])
    hits = 0
    for i in range(0, n, batch_size):
        idx = slice(i, i + batch_size)
        hits += (getattr(adapter.forward(_rows(tensors, idx)), adapter.score_name).argmax(-1)
                 == tensors["labels"][idx]).sum().item()
    return hits / n


def train(args, build_model, grid: RegionGrid) -> dict:
    """`build_model(vocab_size, labels, feature_dim)` → a stock *ForQuestionAnswering model."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    started = time.perf_counter()
    test_set = FashionVqa(split="test", n=args.test_n, seed=args.seed)
    train_sets = [FashionVqa(split=args.train_split, n=args.train_n, seed=args.seed + 1 + e) for e in
                  range(args.epochs if args.fresh_data else 1)]
    tokenizer = word_tokenizer([train_sets[0][i]["text"] for i in range(len(train_sets[0]))])
    labels = list(test_set.label_names)
    model = build_model(len(tokenizer), labels, grid.feature_dim)
    adapter = adapter_class(type(model).__name__)(model, tokenizer=tokenizer, regions=grid)
    test = vqa_tensors(test_set, tokenizer, grid)
    optimizer, schedule = optimizer_and_schedule(model, args)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch, data in enumerate(epoch_data(args, train_sets, lambda d: vqa_tensors(d, tokenizer, grid))):
        model.train()
        order = torch.randperm(len(data["labels"]), generator=generator)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            scores = getattr(adapter.forward(_rows(data, idx)), adapter.score_name)
            loss = torch.nn.functional.cross_entropy(scores, data["labels"][idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, test accuracy "
              f"{accuracy(adapter, test):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    test_accuracy = accuracy(adapter, test)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    grid.save(args.out)
    return write_training_json(args.out, {"train": [t.ref for t in train_sets], "test": test_set.ref,
                                          "test_accuracy": round(test_accuracy, 4),
                                          **provenance(args, started, model, 1)})


def main(description: str, name: str, build_model, grid: RegionGrid, argv=None) -> None:
    """Parse the command line, train, write models/zoo/<name> (or --out), print training.json."""
    args = parse_args(description, ZOO / name, argv)
    print(json.dumps(train(args, build_model, grid), indent=2))


def parse_args(description: str, default_out, argv=None, **defaults) -> argparse.Namespace:
    p = training_parser(description, default_out, train_n=defaults.get("train_n", 60_000), test_n=2_000,
                        epochs=defaults.get("epochs", 10), lr=defaults.get("lr", 1e-3))
    p.add_argument("--fresh-data", action="store_true", help="new grids and questions every epoch")
    args = parse_training_args(p, argv, smoke_test_n=64)
    return args
