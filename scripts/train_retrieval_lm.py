"""Train builtin:retrieval-lm: a tiny stock LlamaForCausalLM that answers kv-retrieval prompts
("k3 = v7 k1 = v2 ; k1 ?" → "v2", then its end token).

Seeded and reproducible on CPU. Every training prompt is fresh (one pass over a stream of `builtin:kv-retrieval`
*train* prompts). A training sequence asks up to MAX_QUERIES keys of its prompt, and the loss is on every token
but the ";" after an answer (only the end token is taught to follow one, as in a one-query prompt): predicting
the query key (one of the prompt's keys) and the next key (not one used yet) trains the attention that retrieval needs.
Training stops early once a validation set of train-split prompts is answered without error.

Writes a Hugging Face checkpoint folder (safetensors), a word-level tokenizer that works offline (tokenizer.json:
every prompt word plus <pad> <s> </s> <unk>; left padding), generation_config.json (greedy, 2 new tokens) and
training.json with the exact-answer accuracy on held-out *test* prompts.

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
from tokenizers import Tokenizer, pre_tokenizers, processors
from tokenizers.models import WordLevel
from training_common import ZOO, cosine_schedule, provenance, write_training_json

from storage.datasets.kv_retrieval import PROMPT_WORDS, KvRetrieval, is_test_prompt

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
PAD, BOS, EOS = 0, 1, 2
MAX_QUERIES = 6  # per training sequence
CONTEXT = 64  # the longest training sequence: <s>, 12 pairs (36), 6 queries with answers (24), </s> = 62 tokens


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


def training_words(sample: dict, rng: np.random.Generator) -> list[str]:
    """The sample's prompt and answer, then 0 … MAX_QUERIES − 1 more queries of other keys of its pairs, each
    answered, then the end token. Only keys whose own one-query prompt is a train-split prompt are asked, so no
    test prompt's question is ever trained on."""
    words = sample["text"].split()
    pairs, asked = words[:-3], words[-2]
    table = dict(zip(pairs[0::3], pairs[2::3]))
    others = [str(k) for k in rng.permutation(list(table))
              if k != asked and not is_test_prompt(" ".join([*pairs, ";", k, "?"]))]
    out = [*words, sample["label"]]
    for key in others[:int(rng.integers(MAX_QUERIES))]:
        out += [";", key, "?", table[key]]
    return [*out, "</s>"]


def training_batch(tok, samples: list[dict], rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Left-padded training sequences; labels on every token but padding and the ";" after an answer (so that
only the end token ever follows an answer, as in a one-query prompt)."""
    rows = [[BOS, *tok.convert_tokens_to_ids(training_words(s, rng))] for s in samples]
    width = max(map(len, rows))
    ids = torch.tensor([[PAD] * (width - len(r)) + r for r in rows])
    after_answer = torch.zeros_like(ids, dtype=torch.bool)
    after_answer[:, 2:] = ids[:, :-2] == tok.convert_tokens_to_ids("?")
    labels = torch.where(ids.eq(PAD) | (after_answer & ids.ne(EOS)), -100, ids)
    return {"input_ids": ids, "attention_mask": ids.ne(PAD).long(), "labels": labels}


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
    p.add_argument("--train-n", type=int, default=224_000, help="fresh training prompts (each seen once)")
    p.add_argument("--test-n", type=int, default=1_000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--check-every", type=int, default=250, help="steps between validation checks")
    p.add_argument("--smoke", action="store_true", help="a few steps into --out: checks the script runs")
    args = p.parse_args(argv)
    if args.smoke:
        if args.out == p.get_default("out"):
            p.error("--smoke needs --out (it must not overwrite the shipped model)")
        args.train_n, args.test_n, args.check_every = 8 * args.batch_size, 32, 4
    args.epochs = 1  # one pass over the stream: cosine_schedule and provenance count epochs
    return args


def train(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    tok = tokenizer()
    stream = KvRetrieval(split="train", n=args.train_n, seed=args.seed + 1)
    validation = KvRetrieval(split="train", n=min(500, args.test_n), seed=args.seed + 2)
    test_set = KvRetrieval(split="test", n=args.test_n, seed=args.seed)
    model = build_model(len(tok))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    schedule = cosine_schedule(optimizer, args)
    rng = np.random.default_rng(args.seed)
    model.train()
    seen = 0
    for step, lo in enumerate(range(0, args.train_n, args.batch_size), start=1):
        batch = [stream[i] for i in range(lo, min(lo + args.batch_size, args.train_n))]
        loss = model(**training_batch(tok, batch, rng))
        optimizer.zero_grad()
        loss.loss.backward()
        optimizer.step()
        schedule.step()
        seen = min(lo + args.batch_size, args.train_n)
        if step % args.check_every == 0:
            valid = exact_answers(model, tok, validation)
            print(f"step {step}: loss {loss.loss.item():.4f}, validation exact {valid:.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
            if valid == 1.0:
                break
    accuracy = exact_answers(model, tok, test_set)
    out = Path(args.out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return write_training_json(out, {
        "train": f"{KvRetrieval(split='train', n=seen, seed=args.seed + 1).ref} (each prompt once; "
                 f"stopped after {seen} of --train-n {args.train_n})",
        "validation": validation.ref, "test": test_set.ref, "test_exact_answers": round(accuracy, 4),
        **provenance(args, started, model, args.threads)})


def main(argv=None) -> None:
    print(json.dumps(train(parse_args(argv)), indent=2))


if __name__ == "__main__":
    main()
