#!/usr/bin/env python
"""Tokens explained per second and peak memory against prompt length, for a Llama-shaped causal LM with random
weights (seed 0): fused capture, eager capture and the sdpa forward + backward floor.

Every prompt has n tokens (BOS included; a word-level tokenizer built offline, tests/tiny_lm.py) and is explained
with forced decoding of the same 4-word continuation (`{"text": prompt, "target": continuation}`), so it yields 4
targets whatever the random weights would generate. Targets/s = targets of one `models.explain(m, batch,
"chefer2021")` call (--batch-size prompts × 4) ÷ its seconds, the median of --repeats timed calls after a warm-up
call, the calls of the cases taken in turn (a change in the machine's load hits them alike); preprocessing is not
timed. The floor is a frozen model with sdpa attention, its input embeddings requiring
grad: one forward of prompt + continuation and one backward per continuation token (each target needs its own
gradient; the fused capture also runs one backward per target). Memory is what the pass adds at its peak, as
bench/peak_memory.py measures it: the resident set of a fresh process per case on CPU (timed in this one, with the
ordinary allocator), torch.cuda.max_memory_allocated on CUDA.

    python bench/bench_lm.py                                  # hidden 256, 4 layers, 256 … 4,096 tokens, CPU
    python bench/bench_lm.py --tokens 256 512 --cases fused floor
    python bench/bench_lm.py --preset llama-1b --device cuda  # ~0.9B parameters, 2,048 tokens, bf16 (GPU suite)
    python bench/bench_lm.py --smoke                          # tiny (the test suite runs it)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

from peak_memory import peak_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing; the cases import tests.tiny_lm

CASES = ("fused", "eager", "floor")
CONTINUATION = "red blue big small"  # 4 words of tests/tiny_lm.py's vocabulary: 4 tokens, 4 targets per prompt


@dataclasses.dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int  # grouped-query attention, as Llama 2/3 have
    intermediate: int
    vocab: int
    tokens: tuple[int, ...]
    precision: str


PRESETS = {
    "small": Preset(256, 4, 4, 2, 688, 8192, (256, 512, 1024, 2048, 4096), "float32"),  # vocab ÷ hidden as in Llama
    "llama-1b": Preset(2048, 16, 16, 8, 5632, 32000, (2048,), "bfloat16"),  # TinyLlama's widths, 16 layers
    "smoke": Preset(32, 2, 4, 2, 64, 256, (48,), "float32"),
}
SHAPE = ("hidden", "layers", "heads", "kv_heads", "intermediate", "vocab")


def llama_config(shape: dict, context: int):
    import transformers as T

    from tests import tiny_lm

    return T.LlamaConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                         num_attention_heads=shape["heads"], num_key_value_heads=shape["kv_heads"],
                         intermediate_size=shape["intermediate"], max_position_embeddings=context,
                         bos_token_id=tiny_lm.BOS, eos_token_id=tiny_lm.EOS, pad_token_id=tiny_lm.PAD)


def autocast(device: str, precision: str):
    import torch

    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=getattr(torch, precision))


def case_pass(case: str, tokens: int, shape: dict, batch_size: int, precision: str, threads: int, device: str):
    """Build the model and the prompts; the case's pass."""
    import torch
    import transformers as T

    from attn_audit import models
    from tests import tiny_lm

    if threads:
        torch.set_num_threads(threads)
    words = len(CONTINUATION.split())
    tok = tiny_lm.tokenizer(chat=False)
    tok.model_max_length = tokens + words
    prompt = " ".join(tiny_lm.WORDS[i % len(tiny_lm.WORDS)] for i in range(tokens - 1))  # + BOS = `tokens`
    torch.manual_seed(0)
    with torch.device(device):  # weights made where they run: a 1B model initialised on the CPU takes minutes
        model = T.LlamaForCausalLM(llama_config(shape, tokens + words)).eval()
    if case == "floor":
        model.set_attn_implementation("sdpa")
        for p in model.parameters():
            p.requires_grad_(False)
        ids = tok([f"{prompt} {CONTINUATION}"] * batch_size, return_tensors="pt")["input_ids"].to(device)
        inputs, said = ids[:, :-1], ids[:, -words:]  # token p is scored by the logits at p - 1

        def floor():
            with autocast(device, precision):
                embeds = model.get_input_embeddings()(inputs).detach().requires_grad_()
                logits = model(inputs_embeds=embeds).logits
            scores = logits[:, -words:].float().gather(2, said[..., None])[..., 0]  # (batch, words)
            for j in range(words):
                torch.autograd.grad(scores[:, j].sum(), embeds, retain_graph=j < words - 1)
        return floor
    m = models.wrap(model, tokenizer=tok, device=device, precision=precision, capture=case)
    batch = m.preprocess([{"id": f"p{i}", "text": prompt, "target": CONTINUATION}
                          for i in range(batch_size)]).to(m.device)
    assert batch["input_ids"].shape[1] == tokens, batch["input_ids"].shape

    def explain():
        done = models.explain(m, batch, "chefer2021")
        failed = [e.error for e in done if e.error is not None]
        if failed or len(done) != batch_size * words:  # a pass that explained less would look fast
            raise RuntimeError(f"{case}: {len(done) - len(failed)} of {batch_size * words} targets explained; "
                               f"{failed[:1]}")
    return explain


def timed_in_turn(passes: dict, device: str, repeats: int) -> dict[str, list[float]]:
    """Each pass once untimed, then `repeats` rounds that time every pass once."""
    import torch

    seconds = {name: [] for name in passes}
    for run in passes.values():
        run()
    for _ in range(repeats):
        for name, run in passes.items():
            started = time.perf_counter()
            run()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds[name].append(time.perf_counter() - started)
    return seconds


def parameters(shape: dict) -> int:
    import torch
    import transformers as T

    with torch.device("meta"):  # shapes only, no memory
        return sum(p.numel() for p in T.LlamaForCausalLM(llama_config(shape, 2)).parameters())


def ratio(top: float | None, bottom: float | None) -> str:
    return f"{top / bottom:.2f}x" if top and bottom else "-"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="small",
                   help="model shape, prompt lengths and precision (default: small, the CPU run)")
    p.add_argument("--tokens", type=int, nargs="+", help="prompt lengths (default: the preset's)")
    for name in SHAPE:
        p.add_argument(f"--{name.replace('_', '-')}", type=int, help="default: the preset's")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16"),
                   help="autocast dtype of every case (default: the preset's)")
    p.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    p.add_argument("--batch-size", type=int, default=1, help="prompts per explain call (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per case after one warm-up (default 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch threads (default 1 on CPU, steadier on small shared "
                   "machines; torch's choice on CUDA; 0 = torch's choice)")
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON")
    p.add_argument("--smoke", action="store_true", help="hidden 32, 48 tokens, one timed call: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.preset, args.repeats = "smoke", 1
    preset = PRESETS[args.preset]
    tokens = args.tokens or list(preset.tokens)
    shape = {name: getattr(args, name) or getattr(preset, name) for name in SHAPE}
    precision = args.precision or preset.precision
    threads = args.threads if args.threads is not None else (0 if args.device.startswith("cuda") else 1)
    words = len(CONTINUATION.split())
    print(f"Llama-shaped, {parameters(shape):,} parameters (hidden {shape['hidden']}, {shape['layers']} "
          f"layers, {shape['heads']} heads / {shape['kv_heads']} kv heads, intermediate {shape['intermediate']}, "
          f"vocab {shape['vocab']}); batch {args.batch_size} × {words} forced tokens; chefer2021, {precision}, "
          f"{args.device}, {threads or 'default'} thread(s); median of {args.repeats} timed calls")
    print(f"{'tokens':>7} " + " ".join(f"{c + '/s':>10}" for c in CASES) + f" {'fused÷floor':>12} "
          f"{'eager÷floor':>12}  " + " ".join(f"{c + ' MB':>10}" for c in CASES) + f" {'fused÷floor':>12} "
          f"{'eager÷floor':>12}")
    rows = []
    for n in tokens:
        given = dict(tokens=n, shape=shape, batch_size=args.batch_size, precision=precision, threads=threads)
        mb = {c: peak_bytes(case_pass, args.device, case=c, **given) / 2 ** 20 if c in args.cases else None
              for c in CASES}
        seconds = timed_in_turn({c: case_pass(c, device=args.device, **given) for c in args.cases}, args.device,
                                args.repeats)
        rate = {c: args.batch_size * words / statistics.median(seconds[c]) if c in seconds else None for c in CASES}
        cells = " ".join(f"{rate[c]:>10.2f}" if rate[c] else f"{'-':>10}" for c in CASES)
        sizes = " ".join(f"{mb[c]:>10.1f}" if mb[c] is not None else f"{'-':>10}" for c in CASES)
        print(f"{n:>7} {cells} {ratio(rate['fused'], rate['floor']):>12} {ratio(rate['eager'], rate['floor']):>12}  "
              f"{sizes} {ratio(mb['fused'], mb['floor']):>12} {ratio(mb['eager'], mb['floor']):>12}", flush=True)
        rows.append({"tokens": n, **{f"{c}_targets_per_s": rate[c] for c in CASES},
                     **{f"{c}_mb": mb[c] for c in CASES}, "seconds": seconds})
    print("targets/s: tokens explained per second (÷ floor: 1.00x = as fast as the floor); MB: what the pass adds "
          "at its peak (÷ floor: 1.00x = as much as the floor)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"shape": shape, "parameters": parameters(shape), "precision": precision,
                                               "batch_size": args.batch_size, "targets_per_prompt": words,
                                               "device": args.device, "threads": threads, "repeats": args.repeats,
                                               "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
