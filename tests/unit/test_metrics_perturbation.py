"""Perturbation bookkeeping by hand: AUC with the p = 0 point, removal counts and the order of removal."""

from __future__ import annotations

import pytest
import torch
from attn_audit.models.perturbation import keep_masks, removal_counts, removal_ranks
from attn_audit.tasks.evaluate.perturbation_job import auc
from attn_audit.tasks.evaluate.settings import IMAGE_STEPS, TEXT_STEPS, EvalSettings, parse_tests


def test_auc_trapezoid_includes_p0():
    assert auc([0, 0.5, 1], [1, 1, 0]) == pytest.approx(75.0)  # 0.5·1 + 0.5·0.5, × 100
    assert auc([0, 0.1], [1, 0]) == pytest.approx(5.0)  # without the p = 0 point there would be no area
    assert auc(IMAGE_STEPS, [1] * 10) == pytest.approx(90.0)  # image steps stop at 0.9
    assert auc(TEXT_STEPS, [1] * 9) == pytest.approx(100.0)


def test_removal_counts_floor_without_float_surprises():
    counts = removal_counts(torch.tensor([10, 3, 64]), torch.tensor([0.0, 0.3, 0.7, 0.9, 1.0], dtype=torch.float64))
    assert counts.tolist() == [[0, 3, 7, 9, 10], [0, 0, 2, 2, 3], [0, 19, 44, 57, 64]]


def test_ties_are_broken_by_token_index_in_both_directions():
    relevance = torch.tensor([[0.5, 0.9, 0.5, 0.1, 0.5]])
    removable = torch.tensor([[True, True, True, True, False]])  # the last token is special: never removed
    assert removal_ranks(relevance, removable, "positive").tolist() == [[1, 0, 2, 3, 4]]
    assert removal_ranks(relevance, removable, "negative").tolist() == [[1, 3, 2, 0, 4]]
    keep, counts = keep_masks(relevance, removable, [0.0, 0.5, 1.0])
    assert counts.tolist() == [[0, 2, 4]]
    assert keep[0, 0].tolist() == [[True] * 5, [False, False, True, True, True], [False] * 4 + [True]]
    assert keep[0, 1, 1].tolist() == [False, True, True, False, True]
    with pytest.raises(ValueError):
        removal_ranks(relevance, removable, "sideways")


def test_settings_parse_and_digest():
    assert parse_tests("sanity,perturbation") == ("perturbation", "sanity")
    with pytest.raises(Exception, match="unknown test"):
        parse_tests("perturbation,speed")
    s = EvalSettings()
    assert s.digest("localisation") != EvalSettings(tau=0.3).digest("localisation")
    assert s.digest("perturbation") == EvalSettings(tau=0.3).digest("perturbation")
    assert s.key_part("perturbation") != EvalSettings(perturbation_mode="zero").key_part("perturbation")
    assert s.mode_for("text") == "drop" and EvalSettings(perturbation_mode="zero").mode_for("image") == "zero"
