"""Train builtin:fashion-clip: a small stock CLIPModel, contrastively on fashion-caption (canvas, caption) pairs.

The 56x56 grey canvas is cut into 14x14 patches (a 4x4 grid, one quarter of an item each); captions are the four
class words in reading order, tokenised word by word. Seeded, one CPU thread. Writes the checkpoint folder
(safetensors, vocab, preprocessor_config.json) and training.json with the held-out retrieval accuracy: top-1
image→caption and caption→image among each 100 test pairs (grids of Fashion-MNIST *test* items).

    python scripts/train_fashion_clip.py --fresh-data          # full run, writes models/zoo/fashion-clip
    python scripts/train_fashion_clip.py --smoke --out /tmp/clip  # a few steps, for tests
"""

from __future__ import annotations

import json
import time

import numpy as np
import torch
import transformers
from attn_audit.storage.datasets import CLASS_WORDS, FashionCaption
from training_common import ZOO, provenance, write_preprocessor, write_training_json
from vqa_training import epoch_data, optimizer_and_schedule, parse_args, word_tokenizer

MEAN, STD = 0.5, 0.5  # pixel normalisation, written to preprocessor_config.json
RETRIEVAL_POOL = 100  # retrieval accuracy: the right partner among this many


def pair_tensors(data: FashionCaption, tokenizer) -> dict[str, torch.Tensor]:
    samples = [data[i] for i in range(len(data))]
    enc = tokenizer([s["text"] for s in samples], padding=True, return_tensors="pt")
    pixels = torch.from_numpy(np.stack([s["image"] for s in samples])).float().div(255).sub(MEAN).div(STD)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "pixel_values": pixels[:, None]}


def build_model(tokenizer) -> transformers.CLIPModel:
    vocab = tokenizer.get_vocab()
    text = dict(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=128, max_position_embeddings=16, pad_token_id=vocab["[PAD]"],
                bos_token_id=vocab["[CLS]"], eos_token_id=vocab["[SEP]"])  # the text tower pools the first [SEP]
    vision = dict(image_size=56, patch_size=14, num_channels=1, hidden_size=64, num_hidden_layers=3,
                  num_attention_heads=4, intermediate_size=128)
    return transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=64))


@torch.no_grad()
def retrieval(model, tensors) -> tuple[float, float]:
    """(image→caption, caption→image) top-1 accuracy among each RETRIEVAL_POOL pairs (fewer for --smoke)."""
    model.eval()
    hits_i = hits_t = 0
    pool = min(RETRIEVAL_POOL, len(tensors["input_ids"]))
    n = len(tensors["input_ids"]) // pool * pool
    for lo in range(0, n, pool):
        logits = model(**{k: v[lo:lo + pool] for k, v in tensors.items()}).logits_per_image
        truth = torch.arange(len(logits))
        hits_i += (logits.argmax(1) == truth).sum().item()
        hits_t += (logits.argmax(0) == truth).sum().item()
    return hits_i / n, hits_t / n


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    started = time.perf_counter()
    test_set = FashionCaption(split="test", n=args.test_n, seed=args.seed)
    train_sets = [FashionCaption(split=args.train_split, n=args.train_n, seed=args.seed + 1 + e)
                  for e in range(args.epochs if args.fresh_data else 1)]
    tokenizer = word_tokenizer([" ".join(CLASS_WORDS)])  # captions are class words
    model = build_model(tokenizer)
    test = pair_tensors(test_set, tokenizer)
    optimizer, schedule = optimizer_and_schedule(model, args)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch, data in enumerate(epoch_data(args, train_sets, lambda d: pair_tensors(d, tokenizer))):
        model.train()
        order = torch.randperm(len(data["input_ids"]), generator=generator)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = model(**{k: v[idx] for k, v in data.items()}, return_loss=True).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        to_text, to_image = retrieval(model, test)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, retrieval image→caption {to_text:.4f}, "
              f"caption→image {to_image:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    to_text, to_image = retrieval(model, test)
    model.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    write_preprocessor(args.out, 56, MEAN, STD)
    return write_training_json(args.out, {
        "train": [t.ref for t in train_sets], "test": test_set.ref,
        "retrieval_image_to_caption": round(to_text, 4), "retrieval_caption_to_image": round(to_image, 4),
        "retrieval_pool": RETRIEVAL_POOL, **provenance(args, started, model, 1)})


if __name__ == "__main__":
    arguments = parse_args(__doc__, ZOO / "fashion-clip", epochs=6)
    print(json.dumps(train(arguments), indent=2))
