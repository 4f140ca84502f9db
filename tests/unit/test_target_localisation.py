"""Localisation of single targets: caption word k against cell k, detections against the object they found."""

import numpy as np
from attn_audit.tasks.evaluate.target_localisation import box_iou, segmentation_scores, target_mask, target_scores


def caption_sample():
    masks = np.zeros((4, 8, 8), bool)
    for cell in range(4):
        r, c = divmod(cell, 2)
        masks[cell, 4 * r + 1:4 * r + 3, 4 * c + 1:4 * c + 3] = True  # the item: the middle of its cell
    return {"ground_truth": {"word_cells": [0, 1, 2, 3], "cell_masks": masks}}


def detect_sample():
    masks = np.zeros((2, 16, 16), bool)
    masks[0, 0:8, 0:8] = True
    masks[1, 8:16, 8:16] = True
    return {"ground_truth": {"boxes": [[0, 0, 8, 8], [8, 8, 16, 16]], "masks": masks, "classes": [1, 2]}}


def test_caption_word_k_is_scored_against_cell_k():
    sample = caption_sample()
    grid = np.zeros((2, 2))  # one map value per cell: the map of word 2 lights up cell 2 (bottom left)
    grid[1, 0] = 1.0
    right = target_scores(sample, grid, {"position": 2})
    wrong = target_scores(sample, grid, {"position": 1})
    assert right["pointing_game"] == 1.0 and right["bmeq_otsu"] == 1.0 and right["auprc"] == 1.0
    assert wrong["pointing_game"] == 0.0 and wrong["bmeq_otsu"] == 0.0
    assert "longer" in target_scores(sample, grid, {"position": 4})


def test_a_detection_is_scored_against_the_object_its_box_found():
    sample = detect_sample()
    assert box_iou([0, 0, 8, 8], [0, 0, 8, 8]) == 1.0 and box_iou([0, 0, 8, 8], [8, 8, 16, 16]) == 0.0
    np.testing.assert_array_equal(target_mask(sample, {"box": [1, 0, 9, 8]}), sample["ground_truth"]["masks"][0])
    assert "false detection" in target_mask(sample, {"box": [4, 4, 12, 12]})  # IoU 1/7 with either
    grid = np.zeros((4, 4))
    grid[2:, 2:] = 1.0  # the bottom-right object
    found = target_scores(sample, grid, {"box": [8, 8, 16, 16]})
    missed = target_scores(sample, grid, {"box": [0, 0, 8, 8]})
    assert found["seg_iou"] > 0.7 and found["seg_ap"] > 0.9 and found["pointing_game"] == 1.0
    assert missed["seg_iou"] == 0.0 and missed["pointing_game"] == 0.0
    assert "seg_iou" not in target_scores(caption_sample(), np.ones((2, 2)), {"position": 0})


def test_segmentation_of_a_constant_map_selects_nothing_and_does_not_crash():
    mask = np.zeros((8, 8), bool)
    mask[:4] = True
    scores = segmentation_scores(np.ones((2, 2)), mask)
    assert scores["seg_iou"] == 0.0 and 0.0 <= scores["seg_ap"] <= 1.0
