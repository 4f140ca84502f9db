"""Train builtin:fashion-detr: a small stock DetrForObjectDetection (ResNet backbone built offline) on
fashion-detect (1-4 Fashion-MNIST items on a 96x96 canvas).

Two stages, seeded and reproducible on CPU:
1. the ResNet backbone is pre-trained as a Fashion-MNIST classifier (ResNetForImageClassification, items at
   random places on small noise canvases) — DETR's recipe starts from a pre-trained backbone, and HF DETR
   freezes a non-timm ResNet backbone entirely (its parameter filter names timm's stages), with batch norm
   frozen to the running statistics: from random weights it would learn on fixed random features;
2. DETR is trained on fresh fashion-detect canvases every epoch, the backbone unfrozen at a tenth of the lr.

Writes a Hugging Face checkpoint folder (safetensors), the preprocessor_config.json that the DETR adapter reads
(input size, normalisation) and training.json with how it was made and its AP@0.5 (mean over classes) on
held-out canvases built from Fashion-MNIST *test* items.

    python scripts/train_fashion_detr.py                       # full run, writes models/zoo/fashion-detr
    python scripts/train_fashion_detr.py --smoke --out /tmp/d  # a few steps, for tests
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from attn_audit.models.adapters.detr import centre_to_corners
from attn_audit.storage.datasets import FashionDetect
from attn_audit.storage.datasets.fashion.mnist import ITEM_SIZE, load_fashion_mnist
from attn_audit.storage.datasets.fashion.scene import NOISE_MAX
from attn_audit.tasks.evaluate.detection_ap import detection_ap
from training_common import (
    ZOO,
    cosine_schedule,
    image_accuracy,
    parse_training_args,
    training_parser,
    write_preprocessor,
    write_report,
)

SIZE, MEAN, STD = 96, 0.5, 0.5


BACKBONE = {"embedding_size": 16, "hidden_sizes": [32, 64], "depths": [1, 1], "layer_type": "basic",
            "num_channels": 1}
ITEM_CANVAS = 36  # backbone pre-training: a 28x28 item at a random place on a 36x36 noise canvas


def build_model(labels: list[str]) -> transformers.DetrForObjectDetection:
    backbone = {"model_type": "resnet", **BACKBONE, "out_features": ["stage2"]}  # stride 8: a 12x12 grid
    config = transformers.DetrConfig(
        use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=64,
        encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_ffn_dim=128, num_queries=8, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
        id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)})
    return transformers.DetrForObjectDetection(config)


def arrays(dataset) -> tuple[torch.Tensor, list[dict]]:
    """Pixels (N, 1, 96, 96) and DETR targets: classes and (centre x, centre y, w, h) boxes in [0, 1]."""
    samples = [dataset[i] for i in range(len(dataset))]
    pixels = torch.from_numpy(np.stack([s["image"] for s in samples])).float().div(255.0).sub(MEAN).div(STD)
    targets = []
    for s in samples:
        boxes = torch.tensor(s["ground_truth"]["boxes"], dtype=torch.float32) / SIZE
        centre, size = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
        targets.append({"class_labels": torch.tensor(s["ground_truth"]["classes"]),
                        "boxes": torch.cat([centre, size], 1)})
    return pixels.unsqueeze(1), targets


@torch.no_grad()
def average_precision(model, pixels, truths, batch_size=250) -> float:
    """AP@0.5 (tasks/evaluate/detection_ap.py) with every query a detection, scored by its best real class
    probability; `truths` are the samples' ground truth (pixel boxes)."""
    model.eval()
    found = []
    for lo in range(0, len(truths), batch_size):
        out = model(pixel_values=pixels[lo:lo + batch_size])
        score, cls = torch.softmax(out.logits, -1)[..., :-1].max(-1)
        boxes = (centre_to_corners(out.pred_boxes) * SIZE).tolist()
        found += [(lo + i, c, s, b) for i in range(len(score))
                  for c, s, b in zip(cls[i].tolist(), score[i].tolist(), boxes[i])]
    return detection_ap(found, truths)


def item_canvases(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """Fashion-MNIST items at random places on noise canvases, normalised as DETR's input."""
    canvas = rng.integers(0, NOISE_MAX + 1, size=(len(images), ITEM_CANVAS, ITEM_CANVAS)).astype(np.uint8)
    for k, (x, y) in enumerate(rng.integers(0, ITEM_CANVAS - ITEM_SIZE + 1, size=(len(images), 2))):
        canvas[k, y:y + ITEM_SIZE, x:x + ITEM_SIZE] = np.maximum(canvas[k, y:y + ITEM_SIZE, x:x + ITEM_SIZE], images[k])
    pixels = torch.from_numpy(canvas).float().div(255.0).sub(MEAN).div(STD).unsqueeze(1)
    return pixels, torch.from_numpy(np.asarray(labels, dtype=np.int64))


def pretrain_backbone(args, epochs: int, batch_size: int = 128, lr: float = 2e-3) -> tuple[dict, float]:
    """(ResNet state dict, test accuracy in eval mode — the batch-norm statistics DETR freezes)."""
    rng = np.random.default_rng(args.seed)
    classifier = transformers.ResNetForImageClassification(transformers.ResNetConfig(**BACKBONE, num_labels=10))
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=1e-4)
    train_items, test_items = ([a[:args.backbone_items] for a in load_fashion_mnist(split)]
                               for split in (args.train_split, "test"))
    x_test, y_test = item_canvases(*test_items, rng)
    steps = epochs * -(-len(train_items[1]) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    for epoch in range(epochs):
        x, y = item_canvases(*train_items, rng)
        classifier.train()
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            idx = order[i:i + batch_size]
            loss = torch.nn.functional.cross_entropy(classifier(pixel_values=x[idx]).logits, y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        accuracy = image_accuracy(classifier, x_test, y_test)
        print(f"backbone epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, item accuracy {accuracy:.4f}", flush=True)
    return {k.removeprefix("resnet."): v for k, v in classifier.state_dict().items()
            if k.startswith("resnet.") and not k.endswith("num_batches_tracked")}, accuracy


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    test_set = FashionDetect(split="test", n=args.test_n, seed=args.seed)
    x_test, _ = arrays(test_set)
    truths = [test_set[i]["ground_truth"] for i in range(len(test_set))]
    model = build_model(test_set.label_names)
    weights, item_accuracy = pretrain_backbone(args, args.backbone_epochs)
    backbone = model.model.backbone.model
    backbone.load_state_dict(weights)
    backbone.requires_grad_(True)
    others = [p for n, p in model.named_parameters() if not n.startswith("model.backbone.")]
    optimizer = torch.optim.AdamW([{"params": others}, {"params": backbone.parameters(), "lr": args.lr / 10}],
                                  lr=args.lr, weight_decay=1e-4)
    schedule = cosine_schedule(optimizer, args)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        x_train, y_train = arrays(FashionDetect(split=args.train_split, n=args.train_n, seed=args.seed + 1 + epoch))
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size].tolist()
            loss = model(pixel_values=x_train[idx], labels=[y_train[j] for j in idx]).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            optimizer.step()
            schedule.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, AP@0.5 "
              f"{average_precision(model, x_test, truths):.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    ap = average_precision(model, x_test, truths)
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    write_preprocessor(out, SIZE, MEAN, STD)
    return write_report(out, args, started, model, "fashion-detect", test_set.ref, {
        "test_ap50": round(ap, 4), "backbone_pretraining": {"epochs": args.backbone_epochs, "data": (
            f"every Fashion-MNIST {args.train_split} item on a {ITEM_CANVAS}x{ITEM_CANVAS} noise canvas per epoch"),
            "test_item_accuracy": round(item_accuracy, 4)}})


def main(argv=None) -> None:
    p = training_parser(__doc__, ZOO / "fashion-detr", train_n=6_000, test_n=500, epochs=30, batch_size=32, lr=5e-4,
                        smoke_train_n=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backbone-epochs", type=int, default=8, help="epochs of backbone pre-training (stage 1)")
    p.set_defaults(backbone_items=None)  # every item
    args = parse_training_args(p, argv, smoke_test_n=32)
    if args.smoke:  # stage 1 on as few items as stage 2 has canvases
        args.backbone_epochs, args.backbone_items = 1, args.train_n
    print(json.dumps(train(args), indent=2))


if __name__ == "__main__":
    main()
