"""Localisation metrics against hand-computed cases (SPEC.md §4)."""

from __future__ import annotations

import numpy as np
import pytest
from attn_audit.tasks.evaluate.ground_truth import candidates_and_truth, mask_on_grid, word_ids
from attn_audit.tasks.evaluate.localisation import (
    auprc,
    bmeq,
    localisation_scores,
    minmax,
    otsu_threshold,
    pointing_game,
    select,
)
from sklearn.metrics import average_precision_score

MAP = np.array([0.0, 0.2, 0.9, 1.0, 0.4, 0.1])
GT = np.array([False, False, True, True, True, False])


def test_bmeq_by_hand():
    sel = np.array([False, True, True, True, False, False])  # 2 of 3 selected are right; 2 of 3 truths found
    assert bmeq(sel, GT) == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)
    assert bmeq(sel, GT, alpha=0.0) == pytest.approx(2 / 3)  # precision only
    assert bmeq(sel, GT, alpha=1.0) == pytest.approx(2 / 3)  # recall only
    assert bmeq(GT, GT, alpha=0.3) == pytest.approx(1.0)


def test_bmeq_empty_selection_and_empty_ground_truth_are_defined():
    assert bmeq(np.zeros(6, bool), GT) == 0.0  # precision of nothing selected is 0, recall 0
    assert bmeq(np.ones(6, bool), np.zeros(6, bool)) is None  # skipped, never a ZeroDivisionError
    assert localisation_scores(MAP, np.zeros(6, bool)) == {}
    assert auprc(MAP, np.zeros(6, bool)) is None and pointing_game(MAP, np.zeros(6, bool)) is None


def test_threshold_modes():
    assert select(MAP, "fixed", tau=0.5).tolist() == [False, False, True, True, False, False]
    assert select(MAP * 7 + 3, "fixed", tau=0.5).tolist() == select(MAP, "fixed", tau=0.5).tolist()  # min-max
    assert select(MAP, "topk", top_k=0.5).tolist() == [False, False, True, True, True, False]
    assert select(MAP, "topk", top_k=0.01).sum() == 1  # at least one token
    assert select(np.zeros(4), "topk", top_k=0.5).tolist() == [True, True, False, False]  # ties: lower index
    assert not select(np.full(5, 3.0), "fixed", tau=0.5).any()  # a constant map selects nothing
    assert not select(np.full(5, 3.0), "otsu").any()
    assert select(np.array([]), "otsu").size == 0
    with pytest.raises(ValueError):
        select(MAP, "median")


def test_otsu_on_a_bimodal_array():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.2, 0.03, 300), rng.normal(0.8, 0.03, 100)])
    t = otsu_threshold(values)
    assert 0.45 < t < 0.55
    assert select(values, "otsu").sum() == 100
    assert otsu_threshold(np.array([0.0, 1.0])) == pytest.approx(0.5, abs=0.01)  # the middle of the gap


def test_auprc_matches_sklearn_and_pointing_game():
    rng = np.random.default_rng(1)
    for _ in range(5):
        values, truth = rng.random(30), rng.random(30) < 0.3
        assert auprc(values, truth) == pytest.approx(average_precision_score(truth, values))
    assert auprc(MAP, np.ones(6, bool)) == 1.0
    assert pointing_game(MAP, GT) == 1.0
    assert pointing_game(MAP, ~GT) == 0.0
    assert pointing_game(np.zeros(6), np.array([1, 0, 0, 0, 0, 0], bool)) == 1.0  # tie → index 0


def test_minmax():
    assert minmax(np.array([2.0, 4.0, 3.0])).tolist() == [0.0, 1.0, 0.5]
    assert minmax(np.array([5.0, 5.0])).tolist() == [0.0, 0.0]


def test_ground_truth_on_the_patch_grid_and_on_words():
    mask = np.zeros((64, 64), bool)
    mask[10:20, 40:50] = True
    grid = mask_on_grid(mask, (8, 8))
    assert grid.sum() == 4 and grid[1, 5] and grid[2, 6]
    odd = mask_on_grid(mask, (3, 3))  # 64 is not a multiple of 3: spans rounded outwards
    assert odd[0, 1] and odd[0, 2] and odd.sum() == 2
    tokens = ["[CLS]", "is", "there", "a", "sand", "##al", "[SEP]"]
    special = np.array([1, 0, 0, 0, 0, 0, 1], bool)
    assert word_ids(tokens, special).tolist() == [-1, 0, 1, 2, 3, 3, -1]
    assert word_ids(["<s>", "Ġis", "Ġa", "Ġsand", "al", "</s>"], np.array([1, 0, 0, 0, 0, 1], bool)).tolist() == \
        [-1, 0, 1, 2, 2, -1]
    values, truth = candidates_and_truth({"ground_truth": {"text_tokens": [3]}}, "text", np.arange(7.0), tokens,
                                         special)
    assert values.tolist() == [1, 2, 3, 4, 5] and truth.tolist() == [False, False, False, True, True]
    assert candidates_and_truth({"label": 1}, "image", np.zeros((8, 8))) == "no image ground truth"
