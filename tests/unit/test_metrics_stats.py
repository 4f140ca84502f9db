"""Bootstrap intervals, paired significance and ranking direction; metric specs (SPEC.md §5.3)."""

from __future__ import annotations

import numpy as np
import pytest
from attn_audit.models import AttnAuditError
from attn_audit.tasks.evaluate.specs import METRICS, metric_spec
from attn_audit.tasks.evaluate.stats import bootstrap_ci, bootstrap_means, paired_difference, rank_methods


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    values = np.random.default_rng(0).normal(3.0, 1.0, 200)
    a, b = bootstrap_ci(values, seed=7), bootstrap_ci(values, seed=7)
    assert a == b
    assert a.low < values.mean() < a.high and a.mean == pytest.approx(values.mean()) and a.n == 200
    assert a.high - a.low == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.25)  # ≈ the normal interval
    assert bootstrap_ci(values, seed=8) != a  # the seed matters


def test_bootstrap_edge_cases_and_blocks(monkeypatch):
    assert bootstrap_ci(np.array([2.5])).low == 2.5 == bootstrap_ci(np.array([2.5])).high
    assert np.isnan(bootstrap_ci(np.array([])).mean)
    assert bootstrap_ci(np.array([1.0, np.nan, 3.0])).n == 2
    whole = bootstrap_means(np.arange(10.0), 50, seed=1)
    monkeypatch.setattr("attn_audit.tasks.evaluate.stats.BLOCK_ELEMENTS", 30)  # 3 resamples per block
    assert bootstrap_means(np.arange(10.0), 50, seed=1).shape == whole.shape


def test_paired_difference_sees_a_small_consistent_gap():
    rng = np.random.default_rng(2)
    base = rng.normal(0, 5, 100)  # large spread between samples, small consistent gap within pairs
    diff = paired_difference(base + 0.5 + rng.normal(0, 0.1, 100), base)
    assert not diff.contains(0.0) and diff.mean == pytest.approx(0.5, abs=0.05)


def test_ranking_follows_the_metric_direction_and_flags_ties():
    rng = np.random.default_rng(3)
    keys = [(f"s{i}", 0) for i in range(80)]
    base = rng.normal(50, 10, 80)
    per_method = {"low": dict(zip(keys, base)), "high": dict(zip(keys, base + 5)),
                  "high_too": dict(zip(keys, base + 5 + rng.normal(0, 0.01, 80)))}
    best_first = rank_methods(per_method, higher_is_better=True)
    assert [r.method for r in best_first][-1] == "low" and best_first[0].rank == 1
    worst_first = rank_methods(per_method, higher_is_better=False)  # e.g. the positive perturbation AUC
    assert worst_first[0].method == "low"
    high = next(r for r in best_first if r.method == "high")
    assert "high_too" in high.not_significant_vs and "low" not in high.not_significant_vs


def test_metric_specs():
    assert METRICS["auc_positive"].higher_is_better is False
    assert METRICS["auc_negative"].higher_is_better is True
    assert metric_spec("sanity_spearman@layer.3").higher_is_better is False
    METRICS["auc_positive_zero"].check("image")
    with pytest.raises(AttnAuditError, match="does not apply"):
        METRICS["auc_positive_zero"].check("text")
    with pytest.raises(AttnAuditError, match="unknown metric"):
        metric_spec("accuracy")


def test_ranking_intervals_do_not_depend_on_the_order_rows_were_read():
    """The bootstrap draws positions: values taken in sample-id order give the same intervals for the same rows,
    whatever order the store returned them in (adding other rows to a table used to move them)."""
    rng = np.random.default_rng(3)
    keys = [(f"s{i:03d}", t) for i in range(40) for t in (None, 0)]
    values = {"a": {k: float(rng.normal()) for k in keys}, "b": {k: float(rng.normal(0.3)) for k in keys}}
    order = [keys[i] for i in rng.permutation(len(keys))]
    shuffled = {name: {k: per[k] for k in order} for name, per in values.items()}
    first, second = rank_methods(values, True), rank_methods(shuffled, True)
    assert [(r.method, r.interval) for r in first] == [(r.method, r.interval) for r in second]
    assert [r.not_significant_vs for r in first] == [r.not_significant_vs for r in second]
