"""Bootstrap intervals over samples and method rankings with paired significance (SPEC.md §5.3), numpy only.

Percentile bootstrap (seeded; values in sample-id order, so the same rows give the same interval however they
were read): `resamples` resamples of the n per-sample values with replacement (seeded, vectorised in
blocks), the mean of each, and the 2.5th / 97.5th percentiles of those means for a 95% interval. Two methods
are compared on the samples both have (paired): the interval of the mean per-sample difference; when it
contains 0, the difference is not significant.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BLOCK_ELEMENTS = 4_000_000  # indices drawn at once: bounds the memory of one block


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def bootstrap_means(values: np.ndarray, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """(resamples,) means of resamples of `values` drawn with replacement."""
    values = np.asarray(values, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    n = values.size
    block = max(1, BLOCK_ELEMENTS // max(n, 1))
    out = np.empty(resamples)
    for lo in range(0, resamples, block):
        hi = min(lo + block, resamples)
        out[lo:hi] = values[rng.integers(0, n, size=(hi - lo, n))].mean(1)
    return out


def bootstrap_ci(values: np.ndarray, resamples: int = 1000, seed: int = 0, confidence: float = 0.95) -> Interval:
    """Mean and percentile-bootstrap interval; NaN values are left out; an empty input gives NaNs."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    mean = float(values.mean())
    if values.size == 1 or np.all(values == values[0]):
        return Interval(mean, mean, mean, int(values.size))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(bootstrap_means(values, resamples, seed), [tail, 100 - tail])
    return Interval(mean, float(min(low, mean)), float(max(high, mean)), int(values.size))


def paired_difference(a: np.ndarray, b: np.ndarray, resamples: int = 1000, seed: int = 0) -> Interval:
    """Interval of mean(a − b) over aligned samples (pairs where either is NaN are left out)."""
    return bootstrap_ci(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), resamples, seed)


def _in_order(keys) -> list[tuple]:
    """Sample keys (sample_id, target_index) in sample-id order, a missing target first: the bootstrap draws
    positions, so the same values give the same interval however the rows were read."""
    return sorted(keys, key=lambda k: tuple((x is not None, x) for x in k))


@dataclass
class Ranked:
    method: str
    rank: int  # 1 = best in the metric's direction; equal means share a rank
    interval: Interval
    not_significant_vs: list[str] = field(default_factory=list)  # paired difference interval contains 0


def rank_methods(per_method: dict[str, dict[tuple, float]], higher_is_better: bool, resamples: int = 1000,
                 seed: int = 0) -> list[Ranked]:
    """Methods best first. `per_method[name]` maps a sample key (sample_id, target) to its value; each pair of
    methods is compared on the keys both have."""
    intervals = {name: bootstrap_ci([v[k] for k in _in_order(v)], resamples, seed) for name, v in per_method.items()}
    sign = -1.0 if higher_is_better else 1.0
    order = sorted(intervals, key=lambda name: (np.nan_to_num(sign * intervals[name].mean, nan=np.inf), name))
    ranked, previous = [], None
    for position, name in enumerate(order):
        rank = ranked[-1].rank if previous is not None and intervals[name].mean == previous else position + 1
        ranked.append(Ranked(name, rank, intervals[name]))
        previous = intervals[name].mean
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            shared = _in_order(per_method[a.method].keys() & per_method[b.method].keys())
            if not shared:
                continue
            diff = paired_difference([per_method[a.method][k] for k in shared],
                                     [per_method[b.method][k] for k in shared], resamples, seed)
            if diff.n == 0 or diff.contains(0.0):
                a.not_significant_vs.append(b.method)
                b.not_significant_vs.append(a.method)
    return ranked
