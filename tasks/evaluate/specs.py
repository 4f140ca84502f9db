"""What each stored metric means: its direction and where it applies (Quantus-style), so rankings sort the right
way and a metric is never computed for a modality it does not fit.

Metric names in the `metrics` table: `auc_<test>` / `prob_auc_<test>` for the perturbation tests (`<test>` =
`positive`, `negative`, or `positive_zero` / `negative_zero` for the ViT pixel-zeroing protocol),
`bmeq_fixed` / `bmeq_topk` / `bmeq_otsu`, `auprc`, `pointing_game`, `seg_iou` / `seg_ap` (detections), and
`sanity_spearman@<step>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from attn_audit.models import AttnAuditError

ANY = None


@dataclass(frozen=True)
class Metric:
    name: str
    test: str  # perturbation | localisation | sanity
    higher_is_better: bool
    modalities: tuple[str, ...] | None  # None: every modality
    description: str

    def check(self, modality: str) -> None:
        if self.modalities is not None and modality not in self.modalities:
            raise AttnAuditError(f"metric {self.name} does not apply to modality {modality!r} "
                                 f"(only {', '.join(self.modalities)})")


def _perturbation_metrics() -> list[Metric]:
    out = []
    for protocol, modalities, how in (("", ANY, "tokens dropped"), ("_zero", ("image",), "patches zeroed in pixels")):
        for direction, higher, order in (("positive", False, "most"), ("negative", True, "least")):
            test = f"{direction}{protocol}"
            out.append(Metric(f"auc_{test}", "perturbation", higher, modalities,
                              f"area under accuracy vs fraction removed ({order} relevant first, {how}), × 100"))
            out.append(Metric(f"prob_auc_{test}", "perturbation", higher, modalities,
                              f"area under target probability vs fraction removed ({order} relevant first, {how}), "
                              "× 100"))
    return out


METRICS: dict[str, Metric] = {m.name: m for m in [
    *_perturbation_metrics(),
    Metric("bmeq_fixed", "localisation", True, ANY, "BMEQ, tokens with min-max normalised relevance ≥ τ"),
    Metric("bmeq_topk", "localisation", True, ANY, "BMEQ, the top-k fraction of tokens"),
    Metric("bmeq_otsu", "localisation", True, ANY, "BMEQ, tokens above the Otsu threshold of the map"),
    Metric("auprc", "localisation", True, ANY, "average precision of relevance against the ground-truth tokens"),
    Metric("pointing_game", "localisation", True, ANY, "1 when the most relevant token is in the ground truth"),
    Metric("seg_iou", "localisation", True, ("image",), "detections: IoU of the Otsu-thresholded map (resized to "
           "the image) with the object's mask (the reference's weakly-supervised segmentation)"),
    Metric("seg_ap", "localisation", True, ("image",), "detections: average precision of the map's pixel ranking "
           "(resized to the image) against the object's mask"),
    Metric("sanity_spearman", "sanity", False, ANY,
           "Spearman correlation with the original map after cascading randomisation down to <step>"),
]}


def metric_spec(name: str) -> Metric:
    """The spec of a stored metric name (`sanity_spearman@layer.3` → `sanity_spearman`)."""
    spec = METRICS.get(name.split("@", 1)[0])
    if spec is None:
        raise AttnAuditError(f"unknown metric {name!r}; metrics: {', '.join(METRICS)}")
    return spec


def perturbation_test(direction: str, mode: str) -> str:
    """The test's name in `perturbation_curves.perturbation` and in its metric names."""
    return direction if mode == "drop" else f"{direction}_{mode}"
