#!/usr/bin/env python
"""Throughput of the relevancy engine against the per-sample reference loop and the fwd+bwd floor.

Prints, for one or more model configs (random-weight stock Hugging Face models, seed 0), samples/s of:

  1. the per-sample loop as the reference code runs it: batch 1, weights requiring grad,
     output_attentions=True, .retain_grad() on each attention, score.backward() (full backward,
     weight gradients included), then the chefer2021 rule with the full n x n product per layer
     (R = I; R += A_bar R; A_bar = mean_h((dA * A)^+)), readout row 0;
  2. batched chefer2021 through models.explain (preprocessing done once, outside the timing), with the
     default fused capture (models/engine/fused.py) and with the eager reference capture;
  3. the five attention methods in one models.explain call (one capture serves them all); each LRP-family method
     the model's family has, batched and as a per-sample loop of batch-1 models.explain calls;
  4. the cost floor of any gradient method: forward + backward with sdpa attention, frozen weights,
     the input embeddings requiring grad, logits[:, 0].sum().backward(); the same with eager
     attention; and forward only (sdpa, no_grad).

and the ratios batched / per-sample loop and batched / fwd+bwd floor. Warm-up calls are excluded;
each case is timed over several repetitions and the median is reported. The batched chefer2021 map
of sample 0 is checked once against the loop's row (max abs diff).

Examples:
  python bench/bench_engine.py                                   # tiny-vit on CPU, 1 thread (< 60 s)
  python bench/bench_engine.py --model tiny-vit tiny-bert --threads 2
  python bench/bench_engine.py --model vit-b16 --device cuda --precision bfloat16   # batch 128
  python bench/bench_engine.py --model bert-base --device cuda --json out/bench.json
  python bench/bench_engine.py --model tiny-vit --profile        # where batched chefer2021 spends time
  python bench/bench_engine.py --smoke                           # tiny-vit, batch 4, one repetition (the tests)
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attn_audit import models  # noqa: E402

LRP_METHODS = ("transformer_attribution", "partial_lrp", "lrp", "attnlrp", "cp_lrp")

# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defaults:
    """Per-device defaults: batch size, per-sample loop length, warm-up and timed repetitions."""

    batch: int
    loop: int
    warmup: int
    repeats: int


@dataclass(frozen=True)
class BenchConfig:
    name: str
    kind: str  # "vit" or "bert"
    description: str
    config: dict
    seq: int = 0  # text length in tokens ([CLS] ... [SEP] included)
    cpu: Defaults = Defaults(32, 32, 2, 15)
    cuda: Defaults = Defaults(128, 32, 3, 10)


CONFIGS = {
    "tiny-vit": BenchConfig(
        "tiny-vit", "vit", "ViTForImageClassification, 32 px, patch 4 (64 patches + [CLS]), hidden 64, "
        "4 layers, 4 heads, 10 labels",
        dict(image_size=32, patch_size=4, num_channels=3, hidden_size=64, num_hidden_layers=4,
             num_attention_heads=4, intermediate_size=128, num_labels=10),
        cpu=Defaults(32, 32, 2, 15), cuda=Defaults(32, 64, 3, 10)),
    "tiny-bert": BenchConfig(
        "tiny-bert", "bert", "BertForSequenceClassification, seq 64, hidden 64, 4 layers, 4 heads, 2 labels",
        dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
             num_labels=2),
        seq=64, cpu=Defaults(32, 32, 2, 15), cuda=Defaults(32, 64, 3, 10)),
    "vit-b16": BenchConfig(
        "vit-b16", "vit", "ViTForImageClassification ViT-B/16, 224 px (196 patches + [CLS]), hidden 768, "
        "12 layers, 12 heads, 1000 labels",
        dict(image_size=224, patch_size=16, num_channels=3, hidden_size=768, num_hidden_layers=12,
             num_attention_heads=12, intermediate_size=3072, num_labels=1000),
        cpu=Defaults(8, 1, 1, 2), cuda=Defaults(128, 32, 2, 5)),
    **{f"bert-base{suffix}": BenchConfig(
        f"bert-base{suffix}", "bert", f"BertForSequenceClassification BERT-base, seq {seq}, hidden 768, 12 layers, "
        "12 heads, 2 labels",
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
             num_labels=2),
        seq=seq, cpu=Defaults(4, 1, 1, 2), cuda=cuda)
       for suffix, seq, cuda in (("", 128, Defaults(128, 32, 2, 5)), ("-512", 512, Defaults(32, 8, 2, 5)))},
}

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
TOLERANCE_F32 = 1e-4
WARMUP_MAX_S = 5.0
NOISY_SPREAD = 0.5  # (max - min) / median above which a case is flagged as noisy
_SAMPLES = 256  # raw samples generated; the batch takes the first --batch-size, the loop cycles through it


def build(cfg: BenchConfig, workdir: Path) -> tuple[torch.nn.Module, object | None, list[dict]]:
    """(stock HF model with random weights, tokenizer or None, raw samples for one batch)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    if cfg.kind == "vit":
        model = T.ViTForImageClassification(T.ViTConfig(**cfg.config)).eval()
        size = cfg.config["image_size"]
        return model, None, [{"id": f"img{i}", "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)}
                             for i in range(_SAMPLES)]
    words = [f"w{i}" for i in range(500)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (workdir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = T.BertTokenizer(vocab_file=str(workdir / "vocab.txt"), model_max_length=cfg.seq)
    conf = dict(cfg.config)
    if cfg.name.startswith("tiny"):
        conf["vocab_size"] = len(tok)
    model = T.BertForSequenceClassification(T.BertConfig(**conf)).eval()
    # seq - 2 one-token words: every sample is exactly `seq` tokens, so no padding anywhere.
    return model, tok, [{"id": f"txt{i}", "text": " ".join(rng.choice(words, size=cfg.seq - 2))}
                        for i in range(_SAMPLES)]




# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


@dataclass
class Timing:
    case: str
    batch: int  # samples per call
    samples: int  # samples processed by one timed call
    seconds: list[float] = field(default_factory=list)
    warmup_calls: int = 0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def per_second(self) -> float:
        return self.samples / self.median

    @property
    def spread(self) -> float:
        """(max - min) / median over the timed repetitions."""
        return (max(self.seconds) - min(self.seconds)) / self.median


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def measure(case: str, fn: Callable[[], object], batch: int, samples: int, device: torch.device,
            warmup: int, repeats: int) -> Timing:
    """`warmup` untimed calls at least, more while calls are still getting faster; then `repeats` timed.

    Fresh processes on small VMs run their first calls many times slower (first-touch memory,
    allocator growth), so the warm-up goes on until the last call is within 25% of the fastest one
    seen (at most WARMUP_MAX_S seconds), and the median of the timed calls is reported.
    """
    seen: list[float] = []
    started = time.perf_counter()
    while len(seen) < warmup or (
            seen and seen[-1] > 1.25 * min(seen) and time.perf_counter() - started < WARMUP_MAX_S):
        seen.append(timed(fn, device))
    timing = Timing(case, batch, samples, warmup_calls=len(seen))
    timing.seconds = [timed(fn, device) for _ in range(repeats)]
    return timing


def autocast(device: torch.device, precision: str):
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


# --------------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------------


def reference_row(model: torch.nn.Module, inputs: dict, device: torch.device, precision: str) -> torch.Tensor:
    """One sample as the reference code explains it: full backward, full n x n products per layer."""
    model.zero_grad(set_to_none=True)
    with autocast(device, precision):
        out = model(**inputs, output_attentions=True)
    attentions = out.attentions
    for a in attentions:
        a.retain_grad()
    logits = out.logits[0]
    score = logits[int(logits.argmax())]
    score.backward()  # weights require grad: every weight gradient is formed too
    n = attentions[0].shape[-1]
    R = torch.eye(n, device=device)
    for a in attentions:  # first layer first: R += A_bar R
        cam, grad = a[0].detach().float(), a.grad[0].float()  # (heads, n, n)
        abar = (grad * cam).clamp(min=0).mean(dim=0)
        R = R + abar @ R
    return R[0].cpu()


def per_sample_loop(model, batch_inputs: dict, count: int, device, precision) -> Callable[[], list]:
    size = next(iter(batch_inputs.values())).shape[0]

    def run():
        return [reference_row(model, {k: v[i % size:i % size + 1] for k, v in batch_inputs.items()},
                              device, precision) for i in range(count)]
    return run


def floor_model(model: torch.nn.Module, attn: str) -> torch.nn.Module:
    """A frozen copy with the given attention implementation; its input embeddings require grad."""
    clone = copy.deepcopy(model)
    clone.set_attn_implementation(attn)
    for p in clone.parameters():
        p.requires_grad_(False)
    clone.get_input_embeddings().register_forward_hook(lambda _m, _i, out: out.requires_grad_(True))
    return clone.eval()


def forward_backward(model, inputs: dict, device, precision) -> Callable[[], None]:
    def run():
        with autocast(device, precision):
            logits = model(**inputs).logits
        logits[:, 0].float().sum().backward()
    return run


def forward_only(model, inputs: dict, device, precision) -> Callable[[], None]:
    def run():
        with torch.no_grad(), autocast(device, precision):
            model(**inputs)
    return run


def batched_map(exp, kind: str) -> np.ndarray:
    return np.asarray(exp.relevance["image" if kind == "vit" else "text"]).ravel()


def compare_sample0(cfg, m, batch, ref_row: torch.Tensor) -> float:
    """Max abs diff between the batched chefer2021 map of sample 0 and the loop's readout row."""
    exp = models.explain(m, batch, method="chefer2021")[0]
    if exp.error:
        raise RuntimeError(f"batched chefer2021 failed for sample 0: {exp.error}")
    got = batched_map(exp, cfg.kind)
    ref = ref_row.numpy().copy()
    if cfg.kind == "vit":
        ref = ref[1:]  # the patch grid leaves out [CLS]
    else:
        ref[0] = 0.0  # the readout token's own entry is reported as 0
    return float(np.abs(got - ref).max())


# --------------------------------------------------------------------------------------------------
# Running one config
# --------------------------------------------------------------------------------------------------


def machine(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": T.__version__, "python": platform.python_version(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def machine_line(info: dict) -> str:
    where = info.get("gpu") or \
        f"{info['cpu']} ({info['cpu_count']} cores, {info['torch_threads']} torch threads)"
    return f"{where}; torch {info['torch']}, transformers {info['transformers']}, Python {info['python']}"


def run_config(cfg: BenchConfig, args, device: torch.device, workdir: Path) -> dict:
    d = cfg.cuda if device.type == "cuda" else cfg.cpu
    bs = args.batch_size or d.batch
    loop_n = args.loop_samples or d.loop
    warmup = d.warmup if args.warmup is None else args.warmup
    repeats = args.repeats or d.repeats
    precision = args.precision

    t0 = time.perf_counter()
    hf_model, tok, samples = build(cfg, workdir)
    m = models.wrap(hf_model, tokenizer=tok, device=device, precision=precision)
    batch = m.preprocess(samples[:bs]).to(device)  # preprocessing and the copy to the device: not timed
    inputs = dict(batch)
    n_tokens = cfg.seq if cfg.kind == "bert" else \
        (cfg.config["image_size"] // cfg.config["patch_size"]) ** 2 + 1
    sdpa, eager = floor_model(m.model, "sdpa"), floor_model(m.model, "eager")
    setup_s = time.perf_counter() - t0

    print(f"\n== {cfg.name}: {cfg.description}")
    print(f"   {n_tokens} tokens, {precision}, {device}; batch {bs}, per-sample loop over {loop_n} samples; "
          f"{warmup} warm-up + {repeats} timed repetitions per case (median); set-up {setup_s:.1f} s",
          flush=True)

    timings: list[Timing] = []

    def add(case, fn, per_call, samples_per_call):
        t = measure(case, fn, per_call, samples_per_call, device, warmup, repeats)
        timings.append(t)
        print(f"   .. {case}: {t.per_second:,.1f} samples/s", flush=True)
        return t

    assert all(p.requires_grad for p in m.model.parameters()), "reference loop needs trainable weights"
    loop = add("per-sample loop (reference style: batch 1, full backward, n x n products)",
               per_sample_loop(m.model, inputs, loop_n, device, precision), 1, loop_n)
    batched = add("batched chefer2021 (models.explain, fused capture)",
                  lambda: models.explain(m, batch, method="chefer2021"), bs, bs)
    eager_m = dataclasses.replace(m, capture="eager")
    eager_capture = add("batched chefer2021, eager capture (every layer's per-head maps)",
                        lambda: models.explain(eager_m, batch, method="chefer2021"), bs, bs)
    methods = models.default_methods()
    add(f"batched, all {len(methods)} methods in one explain call",
        lambda: models.explain(m, batch, method=methods), bs, bs)
    lrp = {}
    singles = [m.preprocess([x]).to(device) for x in samples[:loop_n]]
    for name in [x for x in LRP_METHODS if x in models.methods_for_family(m.adapter.family)]:
        together = add(f"batched {name}", lambda name=name: models.explain(m, batch, method=name), bs, bs)
        alone = add(f"{name}, per-sample loop (models.explain, batch 1)",
                    lambda name=name: [models.explain(m, x, method=name) for x in singles], 1, loop_n)
        lrp[name] = {"batched": together, "per_sample": alone}
    add("forward + backward, eager attention (frozen weights)",
        forward_backward(eager, inputs, device, precision), bs, bs)
    floor = add("forward + backward, sdpa (floor of any gradient method)",
                forward_backward(sdpa, inputs, device, precision), bs, bs)
    add("forward only, sdpa, no_grad", forward_only(sdpa, inputs, device, precision), bs, bs)

    ref0 = reference_row(m.model, {k: v[:1] for k, v in inputs.items()}, device, precision)
    diff = compare_sample0(cfg, m, batch, ref0)

    info = machine(device)
    print_table(cfg, timings, loop, batched, floor, diff, precision, info)
    print(f"   fused / eager capture                : {batched.per_second / eager_capture.per_second:6.2f}x")
    for name, t in lrp.items():
        print(f"   {name:<23}: {t['batched'].per_second / floor.per_second:5.2f}x the floor, batched "
              f"{t['batched'].per_second / t['per_sample'].per_second:5.2f}x its per-sample loop")
    if args.profile:
        profile(m, batch, device, warmup=max(warmup, 1), repeats=repeats)
    result = {
        "model": cfg.name, "description": cfg.description, "tokens": n_tokens, "precision": precision,
        "batch_size": bs, "loop_samples": loop_n, "warmup": warmup, "repeats": repeats, "machine": info,
        "cases": [{"case": t.case, "batch": t.batch, "samples_per_call": t.samples, "median_s": t.median,
                   "warmup_calls": t.warmup_calls, "samples_per_s": t.per_second, "seconds": t.seconds}
                  for t in timings],
        "ratios": {"batched_over_loop": batched.per_second / loop.per_second,
                   "fused_over_eager": batched.per_second / eager_capture.per_second,
                   "batched_over_fwd_bwd_floor": batched.per_second / floor.per_second},
        "max_abs_diff_sample0": diff,
        "lrp": {name: {"samples_per_s": t["batched"].per_second,
                       "batched_over_fwd_bwd_floor": t["batched"].per_second / floor.per_second,
                       "batched_over_per_sample": t["batched"].per_second / t["per_sample"].per_second}
                for name, t in lrp.items()},
    }
    del sdpa, eager
    return result


def print_table(cfg, timings, loop, batched, floor, diff, precision, info) -> None:
    print(f"\n   machine: {machine_line(info)}")
    head = (f"   {'case':<74} {'batch':>5} {'ms/call':>10} {'spread':>7} {'samples/s':>11} "
            f"{'÷ loop':>8} {'÷ floor':>8}")
    print(head)
    print("   " + "-" * (len(head) - 3))
    for t in timings:
        print(f"   {t.case:<74} {t.batch:>5} {1e3 * t.median:>10.2f} {100 * t.spread:>6.0f}% "
              f"{t.per_second:>11,.1f} {t.per_second / loop.per_second:>7.2f}x "
              f"{t.per_second / floor.per_second:>7.2f}x")
    print(f"\n   batched chefer2021 / per-sample loop : {batched.per_second / loop.per_second:6.2f}x")
    print(f"   batched chefer2021 / fwd+bwd floor   : {batched.per_second / floor.per_second:6.2f}x "
          "(1.00x = as fast as forward + backward with sdpa)")
    print(f"   check: sample 0, batched chefer2021 vs per-sample loop row, max abs diff = {diff:.3g}")
    noisy = [t.case for t in timings if t.spread > NOISY_SPREAD]
    if noisy:
        hint = "; --threads 1 is steadier" if info["device"] == "cpu" and info["torch_threads"] > 1 else ""
        print(f"   note: {len(noisy)} case(s) varied by more than {NOISY_SPREAD:.0%} between repetitions "
              f"(other load on the machine?): rerun when it is quiet{hint}")
    if precision == "float32" and not diff <= TOLERANCE_F32:
        print("\n   " + "!" * 90)
        print(f"   !!! WARNING: batched chefer2021 DIFFERS from the per-sample loop by {diff:.3g} "
              f"(> {TOLERANCE_F32:g} in float32) !!!")
        print("   " + "!" * 90)
    elif precision != "float32":
        print(f"   ({precision}: both paths run under the same autocast; differences larger than in "
              "float32 are possible and not flagged)")


# --------------------------------------------------------------------------------------------------
# --profile: where does batched chefer2021 spend its time?
# --------------------------------------------------------------------------------------------------


def profile(m, batch, device: torch.device, warmup: int, repeats: int) -> None:
    """Phase split of one explain call (internal API) and the profiler's top operators."""
    from attn_audit.models.capture import capture_plan
    from attn_audit.models.methods import finalize_rows, get_method
    from attn_audit.models.run_capture import run_capture

    method = get_method("chefer2021")
    state = {}

    def capture():
        state["result"] = run_capture(m.adapter, batch, capture_plan(m, [method]), m.precision)

    def attribute():
        state["rows"] = finalize_rows(method.attribute(state["result"].capture), state["result"].capture)

    def to_maps():
        rows = {k: v.cpu().numpy() for k, v in state["rows"].items()}
        for i in range(batch.size):
            m.adapter.maps({k: v[i] for k, v in rows.items()}, batch, i)

    print("\n   profile of batched chefer2021 (phases timed separately, median ms):")
    capture()
    attribute()
    total = 0.0
    for name, fn in (("capture: forward + autograd.grad + NaN scan", capture),
                     ("rule: chefer2021 attribute + finalize", attribute),
                     ("to numpy + per-sample maps", to_maps)):
        t = measure(name, fn, batch.size, batch.size, device, warmup, repeats)
        total += t.median
        print(f"     {name:<48} {1e3 * t.median:9.2f}")
    whole = measure("explain", lambda: models.explain(m, batch, method="chefer2021"), batch.size, batch.size,
                    device, warmup, repeats)
    print(f"     {'sum of phases':<48} {1e3 * total:9.2f}")
    print(f"     {'whole models.explain call':<48} {1e3 * whole.median:9.2f}")

    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(3):
            models.explain(m, batch, method="chefer2021")
        sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"\n   torch.profiler, 3 explain calls, top operators by {sort}:")
    print(prof.key_averages().table(sort_by=sort, row_limit=18))


# --------------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Configs:\n" + "\n".join(f"  {c.name:<10} {c.description}\n"
                                          f"{'':13}defaults cpu: batch {c.cpu.batch}, loop {c.cpu.loop}, "
                                          f"repeats {c.cpu.repeats}; cuda: batch {c.cuda.batch}, loop "
                                          f"{c.cuda.loop}, repeats {c.cuda.repeats}"
                                          for c in CONFIGS.values())
        + "\n\nExamples:\n" + __doc__.split("Examples:\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", choices=sorted(CONFIGS), default=["tiny-vit"], metavar="NAME",
                   help=f"one or more of {', '.join(CONFIGS)} (default: tiny-vit)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when available (default)")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="autocast dtype for every case (relevancy accumulates in float32); bfloat16 on GPU "
                        "for the ViT-B/16 anchor")
    p.add_argument("--batch-size", type=int, help="samples per batched call (default: per config and device)")
    p.add_argument("--loop-samples", type=int,
                   help="samples in one timed per-sample loop (default: per config and device)")
    p.add_argument("--repeats", type=int, help="timed repetitions per case; the median is reported")
    p.add_argument("--warmup", type=int, help="untimed warm-up calls per case")
    p.add_argument("--threads", type=int,
                   help="torch.set_num_threads; default 1 on CPU (steady timings on small shared VMs, where "
                        "2-thread BLAS swung by 10-100x whenever another process ran), torch's own choice "
                        "on GPU; 0 = torch's own choice")
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to this file")
    p.add_argument("--profile", action="store_true",
                   help="also split batched chefer2021 into phases and print torch.profiler's top operators")
    p.add_argument("--smoke", action="store_true",
                   help="tiny-vit, batch 4, loop of 2, no warm-up, one repetition, 1 thread: seconds")
    args = p.parse_args(argv)
    if args.smoke:
        args.model, args.batch_size, args.loop_samples, args.repeats, args.warmup, args.threads = \
            ["tiny-vit"], 4, 2, 1, 0, 1
    for name in ("batch_size", "loop_samples", "repeats"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("warmup", "threads"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            p.error(f"--{name} must be 0 or more")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else 0)
    if threads > 0:
        torch.set_num_threads(threads)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    if args.precision == "float16" and device.type == "cpu":
        print("error: float16 autocast is for GPUs; use float32 or bfloat16 on CPU", file=sys.stderr)
        return 2
    print(f"attn-audit engine benchmark; machine: {machine_line(machine(device))}")
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.model:
            results.append(run_config(CONFIGS[name], args, device, Path(tmp)))
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(f"\ntotal {time.perf_counter() - started:.1f} s")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"results": results, "args": vars(args)}, indent=2))
        print(f"wrote {out}")
    bad = [r["model"] for r in results
           if r["precision"] == "float32" and not r["max_abs_diff_sample0"] <= TOLERANCE_F32]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
