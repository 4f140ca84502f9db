#!/usr/bin/env python
"""The explanation store: write throughput, grouped-query time and bytes on disk.

1. write: 100k maps of 197 float32 (ViT-B/16: CLS + 14x14 patches) as one Arrow table in the explanations
   schema, committed as one shard (`Store.commit_shard`: Delta append with its transaction id, then the marker)
   vs `pyarrow.parquet.write_table(table, compression="zstd")` of the same table. Best of --repeat, a fresh
   store / file each time. Target: store ≥ 0.5× raw.
2. bytes on disk per stored value: the explanations table's Parquet files / (maps × 197), float32 and the
   float16 option (values rounded to float16 precision, column still float32).
3. query: --maps stored maps (default 1M, in shards of --shard-maps, 100k) with predictions over 10 labels; the mean
   relevance per label and token position through `Store.sql` (DuckDB over the views, which join the shard
   markers), in two formulations: one `avg(relevance[i])` per position (wide, then unpivoted) and
   `unnest` + `generate_subscripts` (long); and the same means from the `map_sums` table, which every shard commit
   writes (relevance summed per group and position). Cold = first run after opening; warm = best of --repeat.
   Target: ≤ 2 s. Results are checked against numpy.

The maps are synthetic but shaped like relevancy maps: a zero CLS entry, a Gaussian blob of random place and
width over the 14x14 grid plus small gamma noise (random maps would compress worse than real ones; blobs with
noise are a fair middle).

Examples:
  python bench/bench_store.py                         # 100k write + 1M-map query (~2 min, ~0.8 GB in a temp dir)
  python bench/bench_store.py --maps 200000 --repeat 2  # quicker
  python bench/bench_store.py --json out/bench_store.json --keep /tmp/store1m
  python bench/bench_store.py --smoke                 # thousands of maps, three shards (the test suite runs it)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attn_audit.storage import tables  # noqa: E402
from attn_audit.storage.store import RunSpec, Store  # noqa: E402

VALUES = 197
GRID = 14


def synthetic_maps(n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:GRID, 0:GRID].astype(np.float32)
    cy, cx = rng.uniform(0, GRID, (2, n, 1, 1)).astype(np.float32)
    width = rng.uniform(1.5, 4.0, (n, 1, 1)).astype(np.float32)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2))
    patches = blob.reshape(n, GRID * GRID) * rng.uniform(0.01, 0.2, (n, 1)) + rng.gamma(0.5, 0.002, (n, GRID * GRID))
    return np.concatenate([np.zeros((n, 1), np.float32), patches.astype(np.float32)], axis=1)


def explanation_rows(run_id: str, first: int, maps: np.ndarray, shard_id: int) -> pa.Table:
    n = len(maps)
    offsets = pa.array(np.arange(0, n * VALUES + 1, VALUES, dtype=np.int32))
    return pa.table({
        "run_id": pa.array([run_id] * n), "method": pa.array(["chefer2021"] * n),
        "sample_id": pa.array([f"s{first + i:08d}" for i in range(n)]),
        "target_index": pa.array(np.zeros(n, np.int32)), "modality": pa.array(["image"] * n),
        "shape": pa.array([[VALUES]] * n, pa.list_(pa.int32())),
        "relevance": pa.ListArray.from_arrays(offsets, pa.array(maps.ravel())),
        "tokens": pa.nulls(n, pa.list_(pa.string())), "special": pa.nulls(n, pa.list_(pa.bool_())),
        "shard_id": pa.array(np.full(n, shard_id, np.int32))}, schema=tables.EXPLANATIONS)


def prediction_rows(run_id: str, first: int, labels: np.ndarray, shard_id: int) -> pa.Table:
    n = len(labels)
    names = np.array([f"class{k}" for k in range(10)])[labels]
    return pa.table({
        "run_id": pa.array([run_id] * n), "sample_id": pa.array([f"s{first + i:08d}" for i in range(n)]),
        "target_index": pa.array(np.zeros(n, np.int32)), "target_label": pa.array(names),
        "score": pa.array(np.ones(n, np.float32)), "probability": pa.array(np.ones(n, np.float32)),
        "prediction": pa.array(labels.astype(np.int32)), "label": pa.array(names),
        "correct": pa.array(np.ones(n, bool)), "shard_id": pa.array(np.full(n, shard_id, np.int32)),
        "target_detail": pa.nulls(n, pa.string())},  # a classifier's targets are classes: no box, no token
        schema=tables.PREDICTIONS)


def spec(n: int, shard: int, dtype: str = "float32", tag: str = "bench") -> RunSpec:
    return RunSpec("bench:synthetic", "0" * 64, f"bench:{tag}", tag.ljust(64, "0"), ("chefer2021",), {},
                   num_samples=n, shard_size=shard, relevance_dtype=dtype)


def parquet_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.parquet"))


def bench_write(work: Path, n: int, repeat: int, rng) -> dict:
    maps = synthetic_maps(n, rng)
    table = explanation_rows("x", 0, maps, 0)
    raw_times, store_times, result = [], [], {}
    for attempt in range(repeat):
        target = work / f"raw{attempt}.parquet"
        started = time.perf_counter()
        pq.write_table(table, target, compression="zstd")
        raw_times.append(time.perf_counter() - started)
        raw_size = target.stat().st_size
        target.unlink()
        for dtype in ("float32", "float16"):
            folder = work / f"w{attempt}{dtype}"
            store = Store.open(folder, create=True)
            run = store.begin_run(spec(n, n, dtype))
            started = time.perf_counter()
            store.commit_shard(run.run_id, 0, explanations=table)
            elapsed = time.perf_counter() - started
            if dtype == "float32":
                store_times.append(elapsed)
            result[f"bytes_per_value_{dtype}"] = parquet_bytes(folder / "explanations") / (n * VALUES)
            shutil.rmtree(folder)
    raw, ours = min(raw_times), min(store_times)
    result.update(maps=n, raw_s=raw, store_s=ours, raw_maps_per_s=n / raw, store_maps_per_s=n / ours,
                  ratio=raw / ours, raw_bytes_per_value=raw_size / (n * VALUES),
                  raw_mb_per_s=table.nbytes / raw / 1e6, store_mb_per_s=table.nbytes / ours / 1e6)
    return result


WIDE = ("WITH w AS (SELECT p.label, {avgs} FROM explanations e JOIN predictions p "
        "USING (run_id, sample_id, target_index) GROUP BY p.label) "
        "SELECT label, CAST(substr(position, 2) AS INTEGER) AS position, mean "
        "FROM (UNPIVOT w ON COLUMNS(* EXCLUDE (label)) INTO NAME position VALUE mean) ORDER BY label, position")
LONG = ("SELECT label, pos - 1 AS position, avg(v) AS mean FROM ("
        "SELECT p.label, unnest(e.relevance) AS v, generate_subscripts(e.relevance, 1) AS pos "
        "FROM explanations e JOIN predictions p USING (run_id, sample_id, target_index)) "
        "GROUP BY ALL ORDER BY label, position")


SUMS = ("SELECT label, position, sum(relevance_sum) / sum(maps) AS mean FROM map_sums GROUP BY ALL "
        "ORDER BY label, position")


def build_query_store(folder: Path, n: int, shard_maps: int, rng) -> tuple[Store, str, dict]:
    store = Store.open(folder, create=True)
    shard = min(shard_maps, n)
    run = store.begin_run(spec(n, shard, tag="query"))
    check: dict[str, list] = {"sum": np.zeros((10, VALUES)), "count": np.zeros(10)}
    started = time.perf_counter()
    for k in range(run.num_shards):
        lo, hi = run.shard_range(k)
        maps, labels = synthetic_maps(hi - lo, rng), rng.integers(0, 10, hi - lo)
        np.add.at(check["sum"], labels, maps.astype(np.float64))
        check["count"] += np.bincount(labels, minlength=10)
        store.commit_shard(run.run_id, k, explanations=explanation_rows(run.run_id, lo, maps, k),
                           predictions=prediction_rows(run.run_id, lo, labels, k))
    store.finish_run(run.run_id)
    expected = check["sum"] / check["count"][:, None]
    return store, run.run_id, {"write_s": time.perf_counter() - started, "expected": expected}


def time_query(store: Store, sql: str, repeat: int) -> tuple[float, float, pa.Table]:
    started = time.perf_counter()
    result = store.sql(sql)
    cold = time.perf_counter() - started
    warm = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = store.sql(sql)
        warm.append(time.perf_counter() - started)
    return cold, min(warm), result


def check(result: pa.Table, expected: np.ndarray) -> float:
    got = np.zeros_like(expected)
    for row in result.to_pylist():
        got[int(row["label"].removeprefix("class")), row["position"]] = row["mean"]
    return float(np.abs(got - expected).max())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write-maps", type=int, default=100_000, help="maps in the write benchmark (100k)")
    parser.add_argument("--maps", type=int, default=1_000_000, help="maps stored for the query benchmark (1M)")
    parser.add_argument("--shard-maps", type=int, default=100_000, help="maps per shard of the query store (100k)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", help="work folder (default: a temporary one)")
    parser.add_argument("--keep", help="keep the query store at this path")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="2,000 maps written, 5,000 queried in shards of 2,000")
    args = parser.parse_args(argv)
    if args.smoke:
        args.write_maps, args.maps, args.shard_maps, args.repeat = 2000, 5000, 2000, 1
    rng = np.random.default_rng(0)
    work = Path(args.dir or tempfile.mkdtemp(prefix="bench_store_"))
    work.mkdir(parents=True, exist_ok=True)
    out: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                             "load_avg": os.getloadavg()}}
    try:
        w = bench_write(work, args.write_maps, args.repeat, rng)
        out["write"] = w
        print(f"\nwrite {w['maps']:,} maps x {VALUES} float32 (best of {args.repeat})")
        print(f"  {'raw pyarrow.parquet.write_table (zstd)':42s} {w['raw_s']:6.2f} s  "
              f"{w['raw_maps_per_s']:>10,.0f} maps/s  {w['raw_mb_per_s']:6.0f} MB/s  "
              f"{w['raw_bytes_per_value']:.2f} B/value")
        print(f"  {'store commit_shard (Delta + marker)':42s} {w['store_s']:6.2f} s  "
              f"{w['store_maps_per_s']:>10,.0f} maps/s  {w['store_mb_per_s']:6.0f} MB/s  "
              f"{w['bytes_per_value_float32']:.2f} B/value"
              f"   → {w['ratio']:.2f}x raw (target ≥ 0.5x)")
        print(f"  {'store, relevance_dtype=float16':42s} {'':27s} {'':8s}  {w['bytes_per_value_float16']:.2f} B/value")

        folder = Path(args.keep) if args.keep else work / "query"
        if folder.exists():
            shutil.rmtree(folder)
        store, run_id, built = build_query_store(folder, args.maps, args.shard_maps, rng)
        stored = parquet_bytes(folder / "explanations")
        out["query"] = {"maps": args.maps, "store_write_s": built["write_s"],
                        "bytes_per_value": stored / (args.maps * VALUES), "results": {}}
        print(f"\nquery: mean relevance per label x position over {args.maps:,} stored maps "
              f"({stored / 1e6:,.0f} MB, {stored / (args.maps * VALUES):.2f} B/value; written in "
              f"{built['write_s']:.1f} s = {args.maps / built['write_s']:,.0f} maps/s incl. data generation)")
        avgs = ", ".join(f"avg(e.relevance[{i + 1}]) AS p{i}" for i in range(VALUES))
        for name, sql in (("wide: avg(relevance[i]) per position", WIDE.format(avgs=avgs)),
                          ("long: unnest + generate_subscripts", LONG), ("map_sums: summed at commit", SUMS)):
            cold, warm, result = time_query(store, sql, args.repeat)
            error = check(result, built["expected"])
            out["query"]["results"][name] = {"cold_s": cold, "warm_s": warm, "max_abs_err": error}
            print(f"  {name:38s} cold {cold:6.2f} s  warm {warm:6.2f} s  "
                  f"(max |err| vs numpy {error:.1e}; target ≤ 2 s)")
        print(f"\nmachine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
