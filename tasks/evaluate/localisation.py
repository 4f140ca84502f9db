"""Ground-truth localisation metrics on one map (SPEC.md §4), numpy only.

Every function takes a flat relevance vector over the candidate tokens (special tokens already left out) and a
bool ground-truth vector of the same length. An empty ground truth makes a metric undefined: the functions
return None (the caller skips the sample and says so), never raise. An empty selection scores precision 0.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

THRESHOLD_MODES = ("fixed", "topk", "otsu")


def minmax(values: np.ndarray) -> np.ndarray:
    """Scaled to [0, 1]; a constant map becomes all zeros."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    if values.size == 0:
        return values
    lo, hi = values.min(), values.max()
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximal between-class variance over a `bins` histogram; the middle of a plateau of
    equal maxima); tokens > it are selected. A constant map returns its value (nothing is above it)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or values.min() == values.max():
        return float(values[0]) if values.size else 0.0
    hist, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)[:-1]  # class sizes below / above each cut between bin i and i + 1
    w1 = np.cumsum(hist[::-1])[::-1][1:]
    s0 = np.cumsum(hist * centers)[:-1]
    s1 = np.cumsum((hist * centers)[::-1])[::-1][1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.where((w0 > 0) & (w1 > 0), w0 * w1 * (s0 / w0 - s1 / w1) ** 2, -1.0)
    best = np.flatnonzero(between >= between.max() * (1 - 1e-9))  # a gap between modes is a plateau:
    return float((centers[best[0]] + centers[best[-1]]) / 2)  # cut in its middle


def top_indices(values: np.ndarray, k: int) -> np.ndarray:
    """The k most relevant positions; ties go to the lower index."""
    order = np.argsort(-np.nan_to_num(np.asarray(values, dtype=np.float64)), kind="stable")
    return order[:k]


def select(values: np.ndarray, mode: str, tau: float = 0.5, top_k: float = 0.25) -> np.ndarray:
    """bool selection of tokens: `fixed` min-max normalised ≥ tau; `topk` the ceil(top_k · n) most relevant
    (at least one); `otsu` above the map's Otsu threshold."""
    values = np.asarray(values, dtype=np.float64).ravel()
    chosen = np.zeros(values.size, dtype=bool)
    if values.size == 0:
        return chosen
    if mode == "fixed":
        return minmax(values) >= tau
    if mode == "topk":
        chosen[top_indices(values, max(1, int(np.ceil(top_k * values.size - 1e-9))))] = True
        return chosen
    if mode == "otsu":
        return np.nan_to_num(values) > otsu_threshold(values)
    raise ValueError(f"threshold mode must be one of {THRESHOLD_MODES}, got {mode!r}")


def bmeq(selected: np.ndarray, truth: np.ndarray, alpha: float = 0.5) -> float | None:
    """(1 − α)·precision + α·recall; precision of an empty selection is 0; None for an empty ground truth."""
    selected, truth = np.asarray(selected, bool), np.asarray(truth, bool)
    if not truth.any():
        return None
    hits = np.count_nonzero(selected & truth)
    precision = hits / np.count_nonzero(selected) if selected.any() else 0.0
    return float((1 - alpha) * precision + alpha * hits / np.count_nonzero(truth))


def auprc(values: np.ndarray, truth: np.ndarray) -> float | None:
    """Average precision of the relevance ranking against the ground truth (scikit-learn's definition)."""
    truth = np.asarray(truth, bool).ravel()
    if not truth.any():
        return None
    if truth.all():
        return 1.0
    return float(average_precision_score(truth, np.nan_to_num(np.asarray(values, dtype=np.float64).ravel())))


def pointing_game(values: np.ndarray, truth: np.ndarray) -> float | None:
    """1.0 when the most relevant token (ties: lower index) is in the ground truth, else 0.0."""
    truth = np.asarray(truth, bool).ravel()
    if not truth.any():
        return None
    return float(truth[top_indices(values, 1)[0]])


def localisation_scores(values: np.ndarray, truth: np.ndarray, tau: float = 0.5, top_k: float = 0.25,
                        alpha: float = 0.5) -> dict[str, float]:
    """Every localisation metric of one map and modality; {} when the ground truth is empty."""
    if not np.asarray(truth, bool).any():
        return {}
    scores = {f"bmeq_{mode}": bmeq(select(values, mode, tau, top_k), truth, alpha) for mode in THRESHOLD_MODES}
    scores["auprc"] = auprc(values, truth)
    scores["pointing_game"] = pointing_game(values, truth)
    return scores
