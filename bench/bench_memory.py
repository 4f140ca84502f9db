#!/usr/bin/env python
"""Peak memory of explaining one long text against sequence length: fused capture, eager capture and the sdpa
forward + backward floor (frozen weights, input embeddings requiring grad).

A BERT-shaped classifier with random weights (seed 0) and 4,096 positions; one text of n tokens per case, each
case in a fresh process so that one cannot inherit another's allocations. Memory is the process's peak resident
set (Linux VmHWM, reset with /proc/self/clear_refs after the model and the input are built) minus the resident
set at that point: what the pass itself added. On a CUDA device, torch.cuda.max_memory_allocated instead.

    python bench/bench_memory.py                          # 128 … 4,096 tokens, 4 heads (a few minutes on CPU)
    python bench/bench_memory.py --tokens 2048 --heads 4 8 16   # flat in the number of heads?
    python bench/bench_memory.py --smoke                  # tiny, seconds (the test suite runs it)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("floor", "fused", "eager")


def rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def one_case(case: str, tokens: int, heads: int, hidden: int, layers: int, device: str) -> dict:
    """Runs in its own process: build, reset the peak, run the case once, report."""
    import torch
    import transformers as T

    sys.path.insert(0, str(ROOT))
    import models
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
    run()  # warm-up: allocator pools and lazy initialisation are not the pass's own memory
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return {"bytes": torch.cuda.max_memory_allocated() - base}
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
    base = rss_bytes("VmRSS")
    run()
    return {"bytes": rss_bytes("VmHWM") - base}


def measure(case: str, tokens: int, heads: int, args) -> int:
    code = (f"import json, sys; sys.path.insert(0, {str(ROOT / 'bench')!r}); import bench_memory as b; "
            f"print(json.dumps(b.one_case({case!r}, {tokens}, {heads}, {args.hidden}, {args.layers}, "
            f"{args.device!r})))")
    # tensors above 64 kB come from mmap and go back on free, so the peak RSS follows the live tensors instead of
    # what glibc's arenas kept (without it the same case varies by ±40% between runs)
    env = os.environ | {"MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode:
        raise RuntimeError(f"{case} at {tokens} tokens failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["bytes"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=int, nargs="+", default=[128, 512, 1024, 2048, 4096])
    p.add_argument("--heads", type=int, nargs="+", default=[4])
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per case; the median is printed")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--smoke", action="store_true", help="64 and 128 tokens, hidden 32: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.tokens, args.hidden, args.layers, args.repeats = [64, 128], 32, 2, 1
    rows = []
    print(f"BERT-shaped, hidden {args.hidden}, {args.layers} layers, batch 1, chefer2021, {args.device}; "
          f"MB the pass adds at its peak, median of {args.repeats} processes")
    print(f"{'tokens':>7} {'heads':>5} " + " ".join(f"{c:>9}" for c in CASES) + f" {'fused÷floor':>12} "
          f"{'eager÷floor':>12}")
    for heads in args.heads:
        for tokens in args.tokens:
            got = {case: statistics.median(measure(case, tokens, heads, args) for _ in range(args.repeats))
                   for case in CASES}
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
