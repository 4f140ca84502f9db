"""Ground-truth localisation of one target of a many-target model (SPEC §4), numpy only.

- A caption word: word k names the item of cell k (fashion-caption `word_cells` / `cell_masks`); its map is
  scored against that cell's item pixels on the map's grid (per-token BMEQ, AUPRC, pointing game).
- A detection: the ground-truth object it found is the one its box overlaps most (IoU ≥ 0.5, else it is a
  false detection and not scored); besides the grid metrics, the reference's weakly-supervised segmentation:
  the map resized to the image, an Otsu threshold, the mask's IoU with the object's mask, and the average
  precision of the pixel ranking.

Called by the evaluation's localisation job (tasks/evaluate/localisation_job.py) for explanations whose stored
`target_detail` names a caption position or a box.
"""

from __future__ import annotations

import numpy as np
from attn_audit.tasks.evaluate.ground_truth import mask_on_grid
from attn_audit.tasks.evaluate.localisation import auprc, localisation_scores, otsu_threshold
from PIL import Image

MATCH_IOU = 0.5


def box_iou(a, b) -> float:
    """IoU of two [x0, y0, x1, y1] boxes (x1, y1 exclusive)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def target_mask(sample: dict, detail: dict) -> np.ndarray | str:
    """The pixel mask of the object the target stands for, or why there is none."""
    truth = sample.get("ground_truth") or {}
    if "position" in detail and "cell_masks" in truth:
        cells = truth.get("word_cells", range(len(truth["cell_masks"])))
        k = detail["position"]
        return truth["cell_masks"][cells[k]] if k < len(cells) else "the caption is longer than the ground truth"
    if "box" in detail and "boxes" in truth:
        overlaps = [box_iou(detail["box"], box) for box in truth["boxes"]]
        if not overlaps or max(overlaps) < MATCH_IOU:
            return "false detection: no ground-truth object overlaps its box"
        return truth["masks"][int(np.argmax(overlaps))]
    return "no ground truth for this kind of target"


def segmentation_scores(relevance: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """The map resized (bilinear) to the mask's pixels, Otsu-thresholded: IoU with the mask, and the AP of the
    pixel ranking against it."""
    mask = np.asarray(mask, dtype=bool)
    grid = np.asarray(relevance, dtype=np.float32)
    pixels = np.asarray(Image.fromarray(grid).resize(mask.shape[::-1], Image.BILINEAR), dtype=np.float64)
    selected = pixels > otsu_threshold(pixels)
    union = np.count_nonzero(selected | mask)
    return {"seg_iou": np.count_nonzero(selected & mask) / union if union else 0.0, "seg_ap": auprc(pixels, mask)}


def target_scores(sample: dict, relevance: np.ndarray, detail: dict, **settings) -> dict[str, float] | str:
    """Grid localisation metrics of an image map (plus segmentation for detections), or why there are none."""
    mask = target_mask(sample, detail)
    if isinstance(mask, str):
        return mask
    relevance = np.asarray(relevance, dtype=np.float64)
    scores = localisation_scores(relevance.ravel(), mask_on_grid(mask, relevance.shape).ravel(), **settings)
    if not scores:
        return "empty ground truth"
    return scores | segmentation_scores(relevance, mask) if "box" in detail else scores
