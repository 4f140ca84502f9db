"""Average precision of a detector's boxes (PASCAL VOC style), the score a DETR checkpoint is judged by.

    detection_ap([(image, class, score, [x0, y0, x1, y1]), ...], [sample["ground_truth"], ...], iou=0.5)

Per class: detections sorted by score, each matched to the unmatched ground-truth box of its image and class it
overlaps most (IoU ≥ `iou`, else a false positive); AP = area under the all-point interpolated
precision–recall curve; the result is the mean over the classes that have ground-truth objects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from attn_audit.tasks.evaluate.target_localisation import box_iou


def detection_ap(detections: Sequence[tuple[int, int, float, Sequence[float]]], truths: Sequence[dict],
                 iou: float = 0.5) -> float:
    """`truths[i]`: {"classes": [...], "boxes": [[x0, y0, x1, y1], ...]} of image i, in the detections' units."""
    classes = sorted({int(c) for t in truths for c in t["classes"]})
    return float(np.mean([_class_ap(detections, truths, c, iou) for c in classes])) if classes else float("nan")


def _class_ap(detections, truths, cls: int, iou: float) -> float:
    boxes = {i: [b for c, b in zip(t["classes"], t["boxes"]) if int(c) == cls] for i, t in enumerate(truths)}
    used = {i: [False] * len(b) for i, b in boxes.items()}
    hits = []
    for image, _, _, box in sorted((d for d in detections if int(d[1]) == cls), key=lambda d: -d[2]):
        overlaps = [box_iou(box, truth) for truth in boxes[image]]
        best = int(np.argmax(overlaps)) if overlaps else -1
        hit = best >= 0 and overlaps[best] >= iou and not used[image][best]
        if hit:
            used[image][best] = True
        hits.append(hit)
    if not hits:
        return 0.0
    hits = np.asarray(hits, dtype=np.float64)
    recall = np.cumsum(hits) / sum(len(b) for b in boxes.values())
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # all-point interpolation
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * envelope))
