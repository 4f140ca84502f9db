#!/usr/bin/env python
"""Peak memory of explaining one long text against sequence length: fused capture, eager capture and the sdpa
forward + backward floor (frozen weights, input embeddings requiring grad).

A BERT-shaped classifier with random weights (seed 0) and 4,096 positions; one text of n tokens per case. Memory
is what the pass adds at its peak, measured as bench/peak_memory.py says: the resident set of a fresh process per
case on CPU, torch.cuda.max_memory_allocated on a CUDA device.

    python bench/bench_memory.py                          # 128 … 4,096 tokens, 4 heads (a few minutes on CPU)
    python bench/bench_memory.py --tokens 2048 --heads 4 8 16   # flat in the number of heads?
    python bench/bench_memory.py --smoke                  # tiny, seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

from peak_memory import peak_bytes

ROOT = Path(__file__).resolve().parents[1]
CASES = ("floor", "fused", "eager")


def case_pass(case: str, tokens: int, heads: int, hidden: int, layers: int, device: str):
    """Build the model and the text; the case's pass, for peak_memory.peak_bytes."""
    import torch
    import transformers as T

    sys.path.insert(0, str(ROOT))
    from attn_audit import models
    from tests.tiny_models import bert_tokenizer

    torch.manual_seed(0)
    config = T.BertConfig(vocab_size=30, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                          intermediate_size=2 * hidden, max_position_embeddings=max(tokens, 512), num_labels=2)
    model = T.BertForSequenceClassification(config).eval()
    tok = bert_tokenizer()
    m = models.wrap(model, tokenizer=tok, device=device, max_length=tokens, capture="eager" if case == "eager"
                    else "fused")
    batch = m.preprocess([{"id": "long", "text": " ".join(["good"] * (tokens - 2))}]).to(m.device)
    assert batch["input_ids"].shape[1] == tokens
    if case == "floor":
        model.set_attn_implementation("sdpa")
        for p in model.parameters():
            p.requires_grad_(False)

        def run():
            embeds = model.get_input_embeddings()(batch["input_ids"]).detach().requires_grad_()
            logits = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"]).logits
            logits[:, 0].sum().backward()
    else:
        def run():
            models.explain(m, batch, "chefer2021")
    return run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096])
    p.add_argument("--heads", type=int, nargs="+", default=[4])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per case; the median is printed")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--smoke", action="store_true", help="256 tokens, hidden 32: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.tokens, args.hidden, args.layers, args.repeats = [256], 32, 2, 1
    rows = []
    print(f"BERT-shaped, hidden {args.hidden}, {args.layers} layers, batch 1, chefer2021, {args.device}; "
          f"MB the pass adds at its peak, median of {args.repeats} processes")
    print(f"{'tokens':>7} {'heads':>5} " + " ".join(f"{c:>9}" for c in CASES) + f" {'fused÷floor':>12} "
          f"{'eager÷floor':>12}")
    for heads in args.heads:
        for tokens in args.tokens:
            shape = dict(tokens=tokens, heads=heads, hidden=args.hidden, layers=args.layers)
            got = {case: statistics.median(peak_bytes(case_pass, args.device, case=case, **shape)
                                           for _ in range(args.repeats)) for case in CASES}
            mb = {case: got[case] / 2 ** 20 for case in CASES}
            floor = max(mb["floor"], 1e-9)
            print(f"{tokens:>7} {heads:>5} " + " ".join(f"{mb[c]:>9.1f}" for c in CASES) +
                  f" {mb['fused'] / floor:>11.2f}x {mb['eager'] / floor:>11.2f}x", flush=True)
            rows.append(dataclasses.asdict(Row(tokens, heads, **{f"{c}_mb": mb[c] for c in CASES})))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


@dataclasses.dataclass
class Row:
    tokens: int
    heads: int
    floor_mb: float
    fused_mb: float
    eager_mb: float


if __name__ == "__main__":
    sys.exit(main())
