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
    maps = explanations.select(list(JOIN)).append_column("row", pa.array(np.arange(explanations.num_rows)))
    labels = predictions.select([*JOIN, "target_label", "label", "correct"])
    joined = maps.join(labels, list(JOIN), join_type="left outer").sort_by("row")  # no prediction row: nulls
    if joined.num_rows != explanations.num_rows:
        raise ValueError("a map matches several prediction rows: (sample_id, target_index) repeats in predictions")
    keys = explanations.select(["method", "modality"])
    for name in GROUP[2:]:
        keys = keys.append_column(name, joined[name])
    groups, gid = _group_ids(keys)
    relevance = explanations["relevance"]
    lengths = pc.fill_null(pc.list_value_length(relevance), 0).to_numpy()
    values = pc.list_flatten(relevance).to_numpy()
    sums, counts = _summed(values, lengths, gid, len(groups))
    group, position = np.nonzero(counts)
    rows = {name: [groups[g][i] for g in group] for i, name in enumerate(GROUP)}
    return pa.Table.from_pydict({
        "run_id": pa.repeat(explanations["run_id"][0], len(group)), **rows,
        "position": position.astype(np.int32), "maps": counts[group, position],
        "relevance_sum": sums[group, position], "shard_id": pa.repeat(explanations["shard_id"][0], len(group))},
        schema=MAP_SUMS)


def _summed(values: np.ndarray, lengths: np.ndarray, gid: np.ndarray, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(relevance sums, map counts), each groups × longest map, from the maps' flat values. Maps of one length
    are one dense block (all of them, on a vision model: no gather), sorted by group and summed slice by slice
    (np.add.reduceat with a float64 accumulator was 18x slower)."""
    width = max(int(lengths.max()), 1)
    sums, counts = np.zeros((groups, width)), np.zeros((groups, width), np.int64)
    starts = np.cumsum(lengths) - lengths
    for length in np.unique(lengths[lengths > 0]):
        rows = np.flatnonzero(lengths == length)
        block = values.reshape(-1, length) if len(rows) == len(lengths) else \
            values[starts[rows][:, None] + np.arange(length)]
        order = np.argsort(gid[rows], kind="stable")
        ordered, block = gid[rows][order], block[order]
        cuts = [*np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, len(ordered)]
        for lo, hi in zip([0, *cuts[:-1]], cuts, strict=True):  # one slice per group: numpy's float64 sum is fast
            sums[ordered[lo], :length] += block[lo:hi].sum(axis=0, dtype=np.float64)
            counts[ordered[lo], :length] += hi - lo
    return sums, counts


def _group_ids(keys: pa.Table) -> tuple[list[tuple], np.ndarray]:
    """The distinct GROUP keys and each row's index among them: each key column dictionary-encoded (nulls too),
    the codes combined in mixed radix, np.unique of that (no Python loop over the rows)."""
    code, dictionaries = np.zeros(keys.num_rows, np.int64), []
    for name in GROUP:
        encoded = pc.dictionary_encode(keys[name].combine_chunks(), null_encoding="encode")
        dictionaries.append(encoded.dictionary.to_pylist())
        code = code * len(dictionaries[-1]) + encoded.indices.to_numpy(zero_copy_only=False)
    distinct, gid = np.unique(code, return_inverse=True)
    groups = []
    for value in distinct.tolist():
        key = []
        for words in reversed(dictionaries):
            value, index = divmod(value, len(words))
            key.append(words[index])
        groups.append(tuple(reversed(key)))
    return groups, gid
