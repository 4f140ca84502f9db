"""How much two relevancy maps of one sample agree: Spearman rank correlation and top-k overlap, batched over
samples whose maps have the same length (rows of two (m, n) arrays, row i of `a` paired with row i of `b`)."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def comparable(values: np.ndarray, special: np.ndarray | None = None) -> np.ndarray:
    """The flat map without its special tokens ([CLS], [SEP], ...: reported as 0 by convention, they would only
    add ties to the ranking), as float64."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64).ravel())
    return values if special is None else values[~np.asarray(special, bool).ravel()]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(m,) Spearman's rho of each row pair: Pearson correlation of the average ranks (ties share their mean
    rank). NaN where either row is constant (no ranking to compare)."""
    ra, rb = rankdata(np.atleast_2d(a), axis=1), rankdata(np.atleast_2d(b), axis=1)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    scale = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = np.where(scale > 0, (ra * rb).sum(axis=1) / scale, np.nan)
    return np.clip(rho, -1.0, 1.0)


def top_k(n: int, fraction: float) -> int:
    """How many positions make the top: ceil(fraction · n), at least one."""
    return max(1, int(np.ceil(fraction * n - 1e-9)))


def top_k_overlap(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """(m,) share of the k most relevant positions of `a` that are among the k most relevant of `b` (1 = the same
    set). Ties go to the lower position, as the localisation metrics break them."""
    a, b = np.atleast_2d(a), np.atleast_2d(b)
    chosen = []
    for x in (a, b):
        mask = np.zeros(x.shape, dtype=bool)
        np.put_along_axis(mask, np.argsort(-x, axis=1, kind="stable")[:, :k], True, axis=1)
        chosen.append(mask)
    return (chosen[0] & chosen[1]).sum(axis=1) / k
