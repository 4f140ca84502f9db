"""`map_sums` on hand-made rows: each group's count and sum per position, texts of different lengths, a map
without a prediction row, and the shard's run / shard ids carried over."""

import numpy as np
import pyarrow as pa
from attn_audit.storage import tables
from attn_audit.storage.store.map_sums import map_sums


def explanations(rows):
    """rows: (sample_id, method, modality, relevance)"""
    n = len(rows)
    return pa.table({
        "run_id": ["r"] * n, "method": [r[1] for r in rows], "sample_id": [r[0] for r in rows],
        "target_index": [0] * n, "modality": [r[2] for r in rows], "shape": [[len(r[3])] for r in rows],
        "relevance": [list(r[3]) for r in rows], "tokens": [None] * n, "special": [None] * n, "shard_id": [3] * n},
        schema=tables.EXPLANATIONS)


def predictions(rows):
    """rows: (sample_id, target_label, label, correct)"""
    n = len(rows)
    return pa.table({
        "run_id": ["r"] * n, "sample_id": [r[0] for r in rows], "target_index": [0] * n,
        "target_label": [r[1] for r in rows], "score": [1.0] * n, "probability": [1.0] * n, "prediction": [0] * n,
        "label": [r[2] for r in rows], "correct": [r[3] for r in rows], "shard_id": [3] * n,
        "target_detail": [None] * n}, schema=tables.PREDICTIONS)


def as_dict(table):
    return {(r["method"], r["modality"], r["target_label"], r["label"], r["correct"], r["position"]):
            (r["maps"], r["relevance_sum"]) for r in table.to_pylist()}


def test_sums_and_counts_per_group_and_position():
    exps = explanations([("a", "m", "text", [1.0, 2.0, 3.0]), ("b", "m", "text", [10.0, 20.0]),
                         ("c", "m", "text", [0.5]), ("a", "n", "text", [4.0])])
    preds = predictions([("a", "cat", "cat", True), ("b", "cat", "cat", True), ("c", "dog", "cat", False)])
    got = map_sums(exps, preds)
    assert got.schema == tables.MAP_SUMS
    assert as_dict(got) == {
        ("m", "text", "cat", "cat", True, 0): (2, 11.0), ("m", "text", "cat", "cat", True, 1): (2, 22.0),
        ("m", "text", "cat", "cat", True, 2): (1, 3.0),  # only a's text is 3 tokens long
        ("m", "text", "dog", "cat", False, 0): (1, 0.5),
        ("n", "text", "cat", "cat", True, 0): (1, 4.0)}
    assert set(got["run_id"].to_pylist()) == {"r"} and set(got["shard_id"].to_pylist()) == {3}


def test_a_map_without_a_prediction_row_is_its_own_group_of_nulls():
    got = as_dict(map_sums(explanations([("a", "m", "image", [1.0, 1.0]), ("z", "m", "image", [2.0, 0.0])]),
                           predictions([("a", "cat", "cat", True)])))
    assert got[("m", "image", None, None, None, 0)] == (1, 2.0)
    assert got[("m", "image", "cat", "cat", True, 1)] == (1, 1.0)


def test_the_mean_map_of_a_group_is_its_sums_over_its_counts():
    rng = np.random.default_rng(0)
    maps = rng.random((50, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 50)
    exps = explanations([(f"s{i}", "m", "image", maps[i]) for i in range(50)])
    preds = predictions([(f"s{i}", f"c{labels[i]}", f"c{labels[i]}", True) for i in range(50)])
    got = as_dict(map_sums(exps, preds))
    for k in range(3):
        mean = [got[("m", "image", f"c{k}", f"c{k}", True, p)] for p in range(6)]
        assert np.allclose([s / n for n, s in mean], maps[labels == k].astype(np.float64).mean(axis=0))


def test_an_empty_shard_has_no_sums():
    assert map_sums(tables.EXPLANATIONS.empty_table(), tables.PREDICTIONS.empty_table()).num_rows == 0
