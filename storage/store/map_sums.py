"""The `map_sums` table: what a grouped query over many stored maps needs, summed at commit time.

Per shard, one row per (method, modality, target_label, label, correct, position): how many of the shard's maps of
that group have the position, and their relevance there summed. The mean map of any grouping of these keys — per
explained class, per true label, right vs wrong predictions — is then `sum(relevance_sum) / sum(maps)` over a few
hundred rows per shard, instead of decoding every stored map (bench/bench_store.py: 1M maps). The commit derives it
from the shard's own explanations and predictions rows, so every writer stores it and it always agrees with them.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from attn_audit.storage.tables import MAP_SUMS

GROUP = ("method", "modality", "target_label", "label", "correct")
JOIN = ("sample_id", "target_index")  # a map's prediction row


def map_sums(explanations: pa.Table, predictions: pa.Table) -> pa.Table:
    """The `map_sums` rows of one shard's `explanations` and `predictions` rows (run_id / shard_id as given)."""
    if explanations.num_rows == 0:
        return MAP_SUMS.empty_table()
    maps = explanations.select([*JOIN, "method", "modality", "run_id", "shard_id"]).append_column(
        "row", pa.array(np.arange(explanations.num_rows)))
    labels = predictions.select([*JOIN, "target_label", "label", "correct"])
    maps = maps.join(labels, list(JOIN), join_type="left outer").sort_by("row")  # a map without a prediction: nulls
    groups, gid = _group_ids(maps)
    relevance = pc.take(explanations["relevance"], maps["row"]).combine_chunks()
    lengths = pc.fill_null(pc.list_value_length(relevance), 0).to_numpy()
    values = pc.list_flatten(relevance).to_numpy(zero_copy_only=False).astype(np.float64)
    width = max(int(lengths.max()), 1)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    cell = np.repeat(gid, lengths) * width + (np.arange(len(values)) - starts)
    sums = np.bincount(cell, weights=values, minlength=len(groups) * width)
    counts = np.bincount(cell, minlength=len(groups) * width)
    held = np.flatnonzero(counts)
    first = maps.slice(0, 1)
    rows = {name: [groups[g][i] for g in held // width] for i, name in enumerate(GROUP)}
    return pa.Table.from_pydict({
        "run_id": [first["run_id"][0].as_py()] * len(held), **rows,
        "position": (held % width).astype(np.int32), "maps": counts[held].astype(np.int64),
        "relevance_sum": sums[held], "shard_id": [first["shard_id"][0].as_py()] * len(held)}, schema=MAP_SUMS)


def _group_ids(maps: pa.Table) -> tuple[list[tuple], np.ndarray]:
    """The distinct GROUP keys of `maps` and each row's index among them."""
    index: dict[tuple, int] = {}
    keys = zip(*(maps[name].to_pylist() for name in GROUP), strict=True)
    gid = np.fromiter((index.setdefault(k, len(index)) for k in keys), dtype=np.int64, count=maps.num_rows)
    return list(index), gid
