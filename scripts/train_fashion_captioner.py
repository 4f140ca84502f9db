"""Train builtin:fashion-captioner: a stock VisionEncoderDecoderModel (tiny ViT + tiny BERT decoder) on
fashion-caption, whose captions name the four items of a 2x2 grid in reading order.

Seeded and reproducible on CPU (one thread). Writes a Hugging Face checkpoint folder (safetensors), the
word-level tokenizer (vocab.txt: one word per Fashion-MNIST class plus the special tokens), the
preprocessor_config.json that `models.load` reads, and training.json with how it was made and its exact-match
caption accuracy on held-out test grids (built from Fashion-MNIST *test* items only).

    python scripts/train_fashion_captioner.py                       # full run, writes models/zoo/fashion-captioner
    python scripts/train_fashion_captioner.py --smoke --out /tmp/c  # a few steps, for tests
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from attn_audit.storage.datasets import FashionCaption
from attn_audit.storage.datasets.fashion import CLASS_WORDS
from training_common import cosine_schedule, parse_args, write_preprocessor, write_report

MEAN, STD = 0.5, 0.5  # pixel normalisation, written to preprocessor_config.json
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]  # [CLS] starts a caption, [SEP] ends it
PAD, CLS, SEP = 0, 2, 3


def tokenizer() -> transformers.BertTokenizer:
    vocab = {w: i for i, w in enumerate([*SPECIALS, *CLASS_WORDS])}
    return transformers.BertTokenizer(vocab=vocab, do_lower_case=False, model_max_length=8)


def build_model(vocab_size: int) -> transformers.VisionEncoderDecoderModel:
    encoder = transformers.ViTConfig(
        image_size=56, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    decoder = transformers.BertConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=8, is_decoder=True, add_cross_attention=True, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, pad_token_id=PAD)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = CLS, PAD, SEP
    model = transformers.VisionEncoderDecoderModel(config=config)
    model.generation_config.max_new_tokens = 6  # four words and [SEP], plus one to see a missing end
    return model


def arrays(dataset, tok) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    samples = [dataset[i] for i in range(len(dataset))]
    pixels = torch.from_numpy(np.stack([s["image"] for s in samples])).float().div(255.0).sub(MEAN).div(STD)
    captions = [s["text"] for s in samples]
    labels = torch.tensor([tok.convert_tokens_to_ids(c.split()) + [SEP] for c in captions])
    return pixels.unsqueeze(1), labels, captions


@torch.no_grad()
def caption_accuracy(model, tok, pixels, captions, batch_size=500) -> tuple[float, float]:
    """(exact-match caption accuracy, word accuracy) of greedy captions."""
    model.eval()
    exact = words = 0
    for i in range(0, len(captions), batch_size):
        generated = model.generate(pixel_values=pixels[i:i + batch_size], do_sample=False)
        for ids, truth in zip(generated.tolist(), captions[i:i + batch_size]):
            said = tok.decode(ids, skip_special_tokens=True).split()
            exact += said == truth.split()
            words += sum(a == b for a, b in zip(said, truth.split()))
    return exact / len(captions), words / (4 * len(captions))


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tok = tokenizer()
    test_set = FashionCaption(split="test", n=args.test_n, seed=args.seed)
    x_test, _, test_captions = arrays(test_set, tok)
    model = build_model(len(tok))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    schedule = cosine_schedule(optimizer, args)
    generator = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        # New grids every epoch (same items, new combinations): the decoder cannot memorise captions.
        train_set = FashionCaption(split=args.train_split, n=args.train_n, seed=args.seed + 1 + epoch)
        x_train, y_train, _ = arrays(train_set, tok)
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        for i in range(0, len(order), args.batch_size):
            idx = order[i:i + args.batch_size]
            loss = model(pixel_values=x_train[idx], labels=y_train[idx]).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        exact, words = caption_accuracy(model, tok, x_test, test_captions)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}, exact {exact:.4f}, words {words:.4f} "
              f"({time.perf_counter() - started:.0f} s)", flush=True)
    exact, words = caption_accuracy(model, tok, x_test, test_captions)
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    write_preprocessor(out, 56, MEAN, STD)
    return write_report(out, args, started, model, "fashion-caption", test_set.ref,
                        {"test_exact_match": round(exact, 4), "test_word_accuracy": round(words, 4)})


def main(argv=None) -> None:
    args = parse_args(__doc__, "fashion-captioner", argv, train_n=20_000, test_n=1_000, epochs=12, batch_size=64,
                      lr=2e-3, smoke_train_n=256)
    print(json.dumps(train(args), indent=2))


if __name__ == "__main__":
    main()
