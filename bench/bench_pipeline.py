#!/usr/bin/env python
"""What the workflow costs on top of the engine: the audit flow (Prefect + Ray + store) vs the bare loop.

For N built-in samples (builtin:fashion-canvas, every method, batch 32):

  engine-only  the `explain_dataset` loop (read → preprocess → explain), no Prefect, Ray or store, with the
               audit's compute layout: as many processes as the audit has actors, with their torch
               threads, over an even split of the samples, the model loaded before the clock starts; the
               slowest process's time. Timed before, between and after the audits; the least is compared
               (the machine may be shared: load only ever adds time), and so is the least disturbed audit.
  audit        `run_audit(kind="explain")` (the audit flow without its downstream evaluation and report, which
               the engine-only loop does not do either) in a fresh subprocess, into a fresh store: plan → local
               Ray → Prefect's temporary server → actors load the model → shards explained and committed by
               the actors → finish → summary and artifacts.
  start-up     Prefect (temporary server + flow run created), Ray (ray.init), workers (actors loading the
               model), and the stop of Ray and Prefect's server at the end: reported separately and left out
               of the overhead.
  overhead     (audit − start-up − engine-only) / engine-only; target ≤ 25 %.
  peak RSS     of the flow's process (`resource.getrusage(RUSAGE_SELF).ru_maxrss` at its end), one fresh
               subprocess per size (default 1,000 and 10,000 samples); target: flat, as the maps stay in the
               workers and go straight to the store. Ray workers and servers are other processes.

The model is builtin:fashion-vit when it is installed, else a random-weight ViT of the same shape (64x64
grey, patch 8, 4 layers, hidden 128); the script says which.

    python bench/bench_pipeline.py                       # 5,000 samples; RSS at 1,000 and 10,000
    python bench/bench_pipeline.py --samples 1000 --rss-sizes 500 2000
    python bench/bench_pipeline.py --json out/bench_pipeline.json
    python bench/bench_pipeline.py --smoke               # 64 samples, one audit (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

DATA = "builtin:fashion-canvas?n={n}"


def pick_model(work: Path) -> tuple[str, str]:
    from attn_audit.models.zoo import available

    if "fashion-vit" in available():
        return "builtin:fashion-vit", "builtin:fashion-vit (trained)"
    import torch
    import transformers
    from attn_audit.storage.datasets import CLASS_NAMES

    config = transformers.ViTConfig(image_size=64, patch_size=8, num_channels=1, hidden_size=128, num_hidden_layers=4,
                                    num_attention_heads=4, intermediate_size=256,
                                    id2label=dict(enumerate(CLASS_NAMES)))
    torch.manual_seed(0)
    folder = work / "fashion-vit-shaped"
    transformers.ViTForImageClassification(config).eval().save_pretrained(folder)
    return str(folder), "random-weight ViT shaped like builtin:fashion-vit (builtin:fashion-vit is not installed)"


def engine_only(model: str, n: int, methods: list[str], batch_size: int, workers: int, threads: int) -> float:
    """The bare loop with the audit's compute layout: `workers` processes (as many as the audit's actors,
    `threads` torch threads each) over an even split of the samples, started together after loading the
    model; the wall time of the slowest."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    bounds = [round(k * n / workers) for k in range(workers + 1)]
    procs = [ctx.Process(target=_engine_part, args=(model, n, bounds[k], bounds[k + 1], methods, batch_size, threads,
                                                    barrier, results)) for k in range(workers)]
    for proc in procs:
        proc.start()
    seconds = [results.get() for _ in procs]
    for proc in procs:
        proc.join()
    return max(seconds)


def _engine_part(model, n, lo, hi, methods, batch_size, threads, barrier, results) -> None:
    import torch
    from attn_audit.storage.datasets import open_dataset
    from attn_audit.tasks.explain_dataset import explain_dataset

    from attn_audit import models

    torch.set_num_threads(threads)
    m = models.load(model, device="cpu")
    dataset = open_dataset(DATA.format(n=n))
    barrier.wait()
    started = time.perf_counter()
    for _ in explain_dataset(m, dataset, methods, "predicted", batch_size, lo, hi):
        pass
    results.put(time.perf_counter() - started)


def audit_in_subprocess(model: str, n: int, methods: list[str], batch_size: int, shard_size: int, store: Path) -> dict:
    args = json.dumps({"model": model, "n": n, "methods": methods, "batch_size": batch_size,
                       "shard_size": shard_size, "store": str(store)})
    done = subprocess.run([sys.executable, __file__, "--child", args], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"audit subprocess failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(spec: str) -> None:
    """The audit as the flow's process runs it; prints timings and peak RSS as one JSON line."""
    from attn_audit.flows.prefect_settings import configure_environment

    configure_environment()
    from attn_audit.flows.audit import run_audit
    from attn_audit.flows.request import AuditRequest

    s = json.loads(spec)
    summary = run_audit(AuditRequest(model=s["model"], data=DATA.format(n=s["n"]), methods=s["methods"],
                                     store=s["store"], batch_size=s["batch_size"], shard_size=s["shard_size"]),
                        kind="explain", progress=False)
    assert summary.explained + summary.failed == s["n"], summary
    print(json.dumps({"seconds": summary.seconds, "timings": summary.timings, "placement": summary.placement,
                      "workers": summary.workers, "status": summary.status,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[1000, 10_000])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shard-size", type=int, help="default: the audit's automatic size")
    parser.add_argument("--repeat", type=int, default=2,
                        help="audits to run (alternated with engine-only runs, one more of those); the least "
                        "disturbed of each is compared (default 2)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--smoke", action="store_true",
                        help="64 samples, one audit and one engine-only run, RSS of that audit only: the start-up's "
                        "time, not the scale")
    args = parser.parse_args(argv)
    if args.smoke:
        args.samples, args.rss_sizes, args.repeat = 64, [64], 1
    if args.child:
        return child(args.child)

    from attn_audit.flows.ray_cluster import _cpu_count
    from attn_audit.tasks.actors import place_run
    from attn_audit.tasks.shards import max_shards

    from attn_audit import models

    methods = models.default_methods()
    placement, shard_size = place_run([{"CPU": float(_cpu_count())}], args.samples,  # what the audit will use
                                      max_shards(args.samples, args.shard_size), args.shard_size)
    workers, threads = placement.workers, placement.threads
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as tmp:
        work = Path(tmp)
        model, model_text = pick_model(work)
        print(f"model: {model_text}\ndata: {DATA.format(n=args.samples)}, methods: {', '.join(methods)}, "
              f"batch {args.batch_size}, shard {shard_size}, "
              f"{placement.describe()}\n"
              f"machine: {platform.processor() or platform.machine()}, {_cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        engines, audits = [], []
        for k in range(args.repeat):  # alternated, so that a change in the machine's load hits both
            engines.append(engine_only(model, args.samples, methods, args.batch_size, workers, threads))
            audits.append(audit_in_subprocess(model, args.samples, methods, args.batch_size, args.shard_size,
                                              work / f"store-{k}"))
        if not args.smoke:  # one engine-only run suffices to see that the script works
            engines.append(engine_only(model, args.samples, methods, args.batch_size, workers, threads))
        rss = {}
        for size in args.rss_sizes:
            if size == args.samples:
                rss[size] = max(a["peak_rss_mb"] for a in audits)
                continue
            run = audit_in_subprocess(model, size, methods, args.batch_size, args.shard_size, work / f"store-{size}")
            rss[size] = run["peak_rss_mb"]

    def startup_of(a: dict) -> dict:
        t = a["timings"]
        return {"prefect": t.get("prefect_start", 0.0), "ray": t.get("ray_start", 0.0),
                "workers": t.get("workers_ready", 0.0), "teardown": t.get("teardown", 0.0)}

    # The least disturbed run of each (min): the machine's load only ever adds time.
    engine = min(engines)
    audit = min(audits, key=lambda a: a["seconds"] - sum(startup_of(a).values()))
    t, startup = audit["timings"], startup_of(audit)
    pipeline = audit["seconds"] - sum(startup.values())
    overhead = (pipeline - engine) / engine
    results = {"model": model_text, "samples": args.samples, "threads": threads, "placement": audit["placement"],
               "engine_seconds": engines, "audit_seconds": [a["seconds"] for a in audits],
               "pipeline_seconds_all": [a["seconds"] - sum(startup_of(a).values()) for a in audits],
               "startup_seconds": startup, "pipeline_seconds": pipeline, "overhead": overhead,
               "timings": t, "peak_rss_mb": rss, "load_average": os.getloadavg()[0]}
    runs = ", ".join(f"{e:.1f}" for e in engines)
    print(f"\nengine-only:   {engine:7.1f} s  ({args.samples / engine:,.0f} samples/s; least of runs {runs} s)")
    pipelines = ", ".join(f"{p:.1f}" for p in results["pipeline_seconds_all"])
    print(f"audit (flow):  {audit['seconds']:7.1f} s  ({audit['placement']}; pipeline of each run {pipelines} s)")
    print(f"  start/stop:  {sum(startup.values()):7.1f} s  (Prefect {startup['prefect']:.1f} s, Ray "
          f"{startup['ray']:.1f} s, workers loading the model {startup['workers']:.1f} s, stopping Ray and "
          f"Prefect {startup['teardown']:.1f} s)")
    print(f"  pipeline:    {pipeline:7.1f} s  (plan {t.get('plan', 0):.1f} s, shards {t.get('shards', 0):.1f} s, "
          f"finish + summary + artifacts {t.get('finish', 0):.1f} s, the rest Prefect's flow run bookkeeping; "
          f"store commits {t.get('commits', 0):.1f} s summed over the workers)")
    verdict = "ok" if overhead <= 0.25 else "MISSED"
    print(f"overhead:      {overhead:7.1%}   (target ≤ 25 %: {verdict})")
    for size, mb in rss.items():
        print(f"peak RSS of the flow process, {size:>6,} samples: {mb:7.0f} MB")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
