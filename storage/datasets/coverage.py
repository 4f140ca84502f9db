"""Pixel mask → patch grid: which of a model's patches an object covers (ground truth per patch)."""

from __future__ import annotations

import numpy as np


def patch_coverage(mask: np.ndarray, patch: int | tuple[int, int]) -> np.ndarray:
    """bool (H/ph, W/pw): a patch is covered when any true pixel of `mask` lies in it."""
    return _patch_view(mask, patch).any(axis=(1, 3))


def patch_coverage_fraction(mask: np.ndarray, patch: int | tuple[int, int]) -> np.ndarray:
    """float32 (H/ph, W/pw): the fraction of each patch's pixels that are true in `mask`."""
    return _patch_view(mask, patch).mean(axis=(1, 3), dtype=np.float32)


def _patch_view(mask: np.ndarray, patch: int | tuple[int, int]) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    ph, pw = (patch, patch) if isinstance(patch, int) else patch
    if mask.ndim != 2 or ph < 1 or pw < 1 or mask.shape[0] % ph or mask.shape[1] % pw:
        raise ValueError(f"a (H, W) mask divisible by the patch size is needed, got {mask.shape} "
                         f"and patch {(ph, pw)}")
    h, w = mask.shape[0] // ph, mask.shape[1] // pw
    return mask.reshape(h, ph, w, pw)
