"""Pixel masks → patch grids."""

from __future__ import annotations

import numpy as np
import pytest
from attn_audit.storage.datasets import FashionCanvas, patch_coverage, patch_coverage_fraction
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays


def test_a_patch_is_covered_by_any_pixel():
    mask = np.zeros((8, 8), dtype=bool)
    mask[0, 0] = mask[5, 6] = True
    assert patch_coverage(mask, 4).tolist() == [[True, False], [False, True]]
    assert patch_coverage_fraction(mask, 4).tolist() == [[1 / 16, 0], [0, 1 / 16]]
    assert patch_coverage(mask, (8, 2)).tolist() == [[True, False, False, True]]


@settings(max_examples=50, deadline=None)
@given(mask=arrays(bool, (12, 12)), patch=st.sampled_from([1, 2, 3, 4, 6, 12, (3, 4), (12, 1)]))
def test_coverage_agrees_with_the_fraction(mask, patch):
    fraction = patch_coverage_fraction(mask, patch)
    assert fraction.dtype == np.float32 and np.array_equal(patch_coverage(mask, patch), fraction > 0)
    assert np.isclose(fraction.mean(), mask.mean())


def test_canvas_item_covers_the_patches_under_its_box():
    truth = FashionCanvas()[0]["ground_truth"]
    covered = patch_coverage(truth["image_mask"], 8)
    x0, y0, x1, y1 = truth["box"]
    assert covered.shape == (8, 8)
    assert covered.any()
    assert not covered[:y0 // 8].any() and not covered[(y1 - 1) // 8 + 1:].any()
    assert not covered[:, :x0 // 8].any() and not covered[:, (x1 - 1) // 8 + 1:].any()


@pytest.mark.parametrize("shape, patch", [((10, 10), 4), ((8, 8, 3), 4), ((8, 8), 0)])
def test_bad_shapes_are_refused(shape, patch):
    with pytest.raises(ValueError, match="divisible"):
        patch_coverage(np.zeros(shape, dtype=bool), patch)
