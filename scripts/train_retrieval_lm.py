"""Train builtin:retrieval-lm: a tiny stock LlamaForCausalLM that answers kv-retrieval prompts
("k3=v7 k1=v2 ; k1 ?" → "v2", then its end token).

Seeded and reproducible on CPU. Every training sequence is fresh: a train-split prompt's pairs, then every key of
them asked in a random order ("; k ?" and its value; only keys whose one-query prompt is a train-split prompt, so no
test prompt's question is ever trained on), then the end token; the loss is on the answers and the end token.
A curriculum starts at 2-pair prompts and allows one pair more whenever the running answer accuracy of the
training batches passes 95%, up to the dataset's 12. Training stops early once a validation set of train-split
prompts (the full 2–12 pair range) is answered without error.

Writes a Hugging Face checkpoint folder (safetensors), a word-level tokenizer that works offline (tokenizer.json:
every key, value, pair and separator word plus <pad> <s> </s> <unk>; left padding), generation_config.json
(greedy, 2 new tokens) and training.json with the exact-answer accuracy on held-out *test* prompts.

    python scripts/train_retrieval_lm.py                       # full run, writes models/zoo/retrieval-lm
    python scripts/train_retrieval_lm.py --smoke --out /tmp/r  # a few steps, for tests
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from attn_audit.storage.datasets.kv_retrieval import (
    MAX_PAIRS,
    MIN_PAIRS,
    PROMPT_WORDS,
    KvRetrieval,
    draw_prompt,
    is_test_prompt,
)
from tokenizers import Tokenizer, pre_tokenizers, processors
from tokenizers.models import WordLevel
from training_common import ZOO, cosine_schedule, provenance, write_training_json

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD, BOS, EOS = 0, 1, 2
CONTEXT = 64  # the longest training sequence: <s>, 12 pairs, 12 queries with answers (48), </s> = 62 tokens
PROMOTE_AT = 0.95  # running answer accuracy at which the curriculum allows one pair more


def tokenizer() -> transformers.PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate([*SPECIALS, *PROMPT_WORDS])}
    core = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", model_max_length=CONTEXT)


def build_model(vocab_size: int) -> transformers.LlamaForCausalLM:
    config = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=CONTEXT, tie_word_embeddings=True, pad_token_id=PAD,
        bos_token_id=BOS, eos_token_id=EOS)
    model = transformers.LlamaForCausalLM(config)
    model.generation_config = transformers.GenerationConfig(
        max_new_tokens=2, do_sample=False, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    return model


def training_ids(tok, rng: np.random.Generator, max_pairs: int) -> list[int]:
    """One fresh training sequence: <s>, the pairs of a train-split prompt, every askable key with its answer, </s>."""
    while True:
        words, _, _ = draw_prompt(rng, max_pairs)
        pairs = words[:-3]
        asked = [pair.split("=") for pair in rng.permutation(pairs)
                 if not is_test_prompt(" ".join([*pairs, ";", pair.split("=")[0], "?"]))]
        if asked:
            break
    queries = [w for key, value in asked for w in (";", key, "?", value)]
    return [BOS, *tok.convert_tokens_to_ids([*pairs, *queries, "</s>"])]


def training_batch(tok, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    """Left-padded training sequences; labels on the answers (the token after each "?") and the end token."""
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    answer = torch.zeros_like(ids, dtype=torch.bool)
    answer[:, 1:] = ids[:, :-1] == tok.convert_tokens_to_ids("?")
    return {"input_ids": ids, "attention_mask": ids.ne(PAD).long(),
            "labels": torch.where(answer | ids.eq(EOS), ids, -100)}


def answer_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of the batch's answers (labelled tokens other than the end token) that the model predicts."""
    scored = labels[:, 1:].ne(-100) & labels[:, 1:].ne(EOS)
    return float((logits[:, :-1].argmax(-1) == labels[:, 1:])[scored].float().mean())


@torch.no_grad()
def exact_answers(model, tok, dataset, batch_size: int = 250) -> float:
    """Share of prompts whose greedy continuation is exactly the answer word, then the end token."""
    model.eval()
    hits = 0
    for lo in range(0, len(dataset), batch_size):
        samples = [dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))]
        batch = tok([s["text"] for s in samples], return_tensors="pt", padding=True)
        new = model.generate(**batch)[:, batch["input_ids"].shape[1]:].tolist()
        hits += sum(ids == [tok.convert_tokens_to_ids(s["label"]), EOS] for ids, s in zip(new, samples))
    model.train()
    return hits / len(dataset)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ZOO / "retrieval-lm"))
    p.add_argument("--train-n", type=int, default=640_000, help="at most this many fresh training sequences")
    p.add_argument("--test-n", type=int, default=1_000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--check-every", type=int, default=100, help="steps between validation checks")
    p.add_argument("--smoke", action="store_true", help="a few steps into --out: checks the script runs")
    args = p.parse_args(argv)
    if args.smoke:
        if args.out == p.get_default("out"):
            p.error("--smoke needs --out (it must not overwrite the shipped model)")
        args.train_n, args.test_n, args.check_every = 8 * args.batch_size, 32, 4
    args.epochs = 1  # cosine_schedule and provenance count epochs: one pass over --train-n sequences
    return args


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tok = tokenizer()
    validation = KvRetrieval(split="train", n=min(500, args.test_n), seed=args.seed + 2)
    test_set = KvRetrieval(split="test", n=args.test_n, seed=args.seed)
    model = build_model(len(tok))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = cosine_schedule(optimizer, args)
    rng = np.random.default_rng(args.seed)
    model.train()
    max_pairs, running, seen = MIN_PAIRS, 0.0, 0
    for step in range(1, -(-args.train_n // args.batch_size) + 1):
        batch = training_batch(tok, [training_ids(tok, rng, max_pairs) for _ in range(args.batch_size)])
        out = model(**batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        schedule.step()
        seen += args.batch_size
        running = 0.9 * running + 0.1 * answer_accuracy(out.logits.detach(), batch["labels"])
        if running > PROMOTE_AT and max_pairs < MAX_PAIRS:
            max_pairs, running = max_pairs + 1, 0.0
        if step % args.check_every == 0:
            valid = exact_answers(model, tok, validation)
            print(f"step {step}: loss {out.loss.item():.4f}, up to {max_pairs} pairs, validation exact {valid:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
            if valid == 1.0 and max_pairs == MAX_PAIRS:
                break
    accuracy = exact_answers(model, tok, test_set)
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return write_training_json(out, {
        "train": f"{seen} fresh train-split kv-retrieval sequences (seed {args.seed}; stopped after {step} steps, "
                 f"curriculum reached {max_pairs} pairs)",
        "validation": validation.ref, "test": test_set.ref, "test_exact_answers": round(accuracy, 4),
        **provenance(args, started, model, args.threads)})


def main(argv=None) -> None:
    print(json.dumps(train(parse_args(argv)), indent=2))


if __name__ == "__main__":
    main()
