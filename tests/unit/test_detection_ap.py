"""Detection AP (tasks/evaluate/detection_ap.py) on hand-computed cases."""

import math

import pytest
from attn_audit.tasks.evaluate.detection_ap import detection_ap

BOX_A, BOX_B = [0, 0, 10, 10], [20, 20, 30, 30]


def test_hits_and_a_false_positive_by_hand():
    truths = [{"classes": [1], "boxes": [BOX_A]}, {"classes": [1], "boxes": [BOX_B]}]
    found = [(0, 1, 0.9, BOX_A), (0, 1, 0.8, BOX_B), (1, 1, 0.7, [21, 21, 31, 31])]  # hit, miss (wrong image), hit
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: envelope 1, 2/3, 2/3 -> AP = 1/2 · 1 + 1/2 · 2/3
    assert detection_ap(found, truths) == pytest.approx(0.5 + 1 / 3)


def test_a_second_detection_of_one_object_and_a_loose_box_are_false_positives():
    truths = [{"classes": [0], "boxes": [BOX_A]}]
    assert detection_ap([(0, 0, 0.9, BOX_A), (0, 0, 0.95, BOX_A)], truths) == pytest.approx(1.0)
    assert detection_ap([(0, 0, 0.9, [5, 5, 15, 15])], truths) == 0.0  # IoU 25/175 < 0.5
    assert detection_ap([(0, 0, 0.9, [5, 5, 15, 15])], truths, iou=0.1) == 1.0


def test_mean_over_the_classes_with_objects_wrong_class_counts_for_nothing():
    truths = [{"classes": [0, 2], "boxes": [BOX_A, BOX_B]}]
    found = [(0, 0, 0.9, BOX_A), (0, 1, 0.9, BOX_B)]  # class 2's object called class 1: class 1 has no truth
    assert detection_ap(found, truths) == pytest.approx((1.0 + 0.0) / 2)
    assert math.isnan(detection_ap([], [{"classes": [], "boxes": []}]))  # no objects: undefined, not 0 or 1
