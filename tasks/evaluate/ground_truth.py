"""A dataset sample's ground truth on a map's tokens: which image patches and which text tokens are relevant.

- image: `ground_truth["image_mask"]` (bool pixels) → the patches of the map's (h, w) grid that any true pixel
  falls in (`storage.datasets.patch_coverage` when the mask divides evenly into the grid).
- text: `ground_truth["text_tokens"]` (word positions in the whitespace-split text) → the map's tokens of those
  words; sub-word tokens are grouped into words by their markers (WordPiece `##`, byte-level BPE `Ġ`,
  SentencePiece `▁`). Special tokens are never candidates.
"""

from __future__ import annotations

import numpy as np
from attn_audit.storage.datasets import patch_coverage

WORD_START_MARKERS = ("Ġ", "▁")


def mask_on_grid(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """bool (h, w): a cell is true when any true pixel of `mask` lies in it."""
    mask = np.asarray(mask, dtype=bool)
    (height, width), (h, w) = mask.shape, grid
    if height % h == 0 and width % w == 0:
        return patch_coverage(mask, (height // h, width // w))
    rows = [(r * height // h, -(-(r + 1) * height // h)) for r in range(h)]
    cols = [(c * width // w, -(-(c + 1) * width // w)) for c in range(w)]
    return np.array([[mask[y0:y1, x0:x1].any() for x0, x1 in cols] for y0, y1 in rows])


def word_ids(tokens: list[str], special: np.ndarray) -> np.ndarray:
    """int (n,): the word each token belongs to (0, 1, ...), -1 for special tokens."""
    special = np.asarray(special, dtype=bool)
    ordinary = [t for t, s in zip(tokens, special) if not s]
    marked = any(t.startswith(WORD_START_MARKERS) for t in ordinary)
    out, word, first = np.full(len(tokens), -1), -1, True
    for i, (token, is_special) in enumerate(zip(tokens, special)):
        if is_special:
            continue
        starts = token.startswith(WORD_START_MARKERS) if marked else not token.startswith("##")
        if first or starts:
            word += 1
        first = False
        out[i] = word
    return out


def candidates_and_truth(sample: dict, modality: str, relevance: np.ndarray, tokens: list[str] | None = None,
                         special: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | str:
    """(relevance of the candidate tokens, their bool ground truth), or the reason there is none."""
    truth = sample.get("ground_truth") or {}
    relevance = np.asarray(relevance, dtype=np.float64)
    if modality == "image":
        if truth.get("image_mask") is None:
            return "no image ground truth"
        grid = relevance.shape if relevance.ndim == 2 else None
        if grid is None:
            return "image map is not a grid"
        return relevance.ravel(), mask_on_grid(truth["image_mask"], grid).ravel()
    if modality == "text":
        if truth.get("text_tokens") is None:
            return "no text ground truth"
        special = np.zeros(len(relevance), bool) if special is None else np.asarray(special, bool)
        words = word_ids(tokens or [""] * len(relevance), special)
        keep = words >= 0
        return relevance[keep], np.isin(words[keep], list(truth["text_tokens"]))
    return f"no ground truth for modality {modality!r}"
