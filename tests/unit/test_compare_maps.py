"""Map agreement on hand-made maps: Spearman's rho and the top-k overlap, worked out by hand."""

import numpy as np
import pytest
from attn_audit.tasks.compare.maps import comparable, rank_correlation, top_k, top_k_overlap
from scipy.stats import spearmanr

MAP = np.array([[0.1, 0.7, 0.3, 0.9, 0.0, 0.5]])


def test_identical_maps_agree_fully():
    assert rank_correlation(MAP, MAP.copy()) == pytest.approx([1.0])
    assert top_k_overlap(MAP, MAP.copy(), 3) == pytest.approx([1.0])


def test_a_monotone_rescaling_changes_nothing():
    assert rank_correlation(MAP, MAP ** 3 * 10 + 2) == pytest.approx([1.0])


def test_reversed_ranking_is_minus_one_and_shares_no_top_position():
    reversed_map = -MAP  # the least relevant position becomes the most relevant
    assert rank_correlation(MAP, reversed_map) == pytest.approx([-1.0])
    assert top_k_overlap(MAP, reversed_map, 3) == pytest.approx([0.0])


def test_hand_computed_rho_and_overlap():
    a = np.array([[4.0, 3.0, 2.0, 1.0]])  # ranks 4 3 2 1
    b = np.array([[3.0, 4.0, 1.0, 2.0]])  # ranks 3 4 1 2: d = 1 1 1 1, rho = 1 − 6·4 / (4·15) = 0.6
    assert rank_correlation(a, b) == pytest.approx([0.6])
    # top-2 of a = {0, 1}, of b = {1, 0}: the same set; top-1: {0} vs {1}: none; top-3: {0,1,2} vs {1,0,3}: 2 of 3
    assert top_k_overlap(a, b, 2) == pytest.approx([1.0])
    assert top_k_overlap(a, b, 1) == pytest.approx([0.0])
    assert top_k_overlap(a, b, 3) == pytest.approx([2 / 3])


def test_ties_take_average_ranks_like_scipy_and_the_lower_position_for_the_top():
    a = np.array([[1.0, 1.0, 2.0, 3.0, 0.0]])
    b = np.array([[0.5, 2.0, 2.0, 1.0, 0.0]])
    assert rank_correlation(a, b) == pytest.approx([spearmanr(a[0], b[0]).statistic])
    # top-2 of b: 2.0 at positions 1 and 2 → {1, 2}; of a: {3, 2}; shared: {2}
    assert top_k_overlap(a, b, 2) == pytest.approx([0.5])


def test_rows_are_independent_and_a_constant_map_has_no_correlation():
    a = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    b = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    rho = rank_correlation(a, b)
    assert rho[:2] == pytest.approx([1.0, -1.0]) and np.isnan(rho[2])
    assert top_k_overlap(a, b, 1) == pytest.approx([1.0, 0.0, 0.0])  # constant: the first position is its top


def test_top_k_is_a_ceiling_of_the_fraction_and_at_least_one():
    assert [top_k(64, 0.1), top_k(10, 0.1), top_k(3, 0.1), top_k(5, 1.0)] == [7, 1, 1, 5]


def test_special_tokens_are_left_out_and_nan_counts_as_zero():
    values = np.array([0.0, 0.4, np.nan, 0.2, 0.0])
    special = np.array([True, False, False, False, True])
    assert comparable(values, special).tolist() == [0.4, 0.0, 0.2]
    assert comparable(values.reshape(1, 5)).shape == (5,)
