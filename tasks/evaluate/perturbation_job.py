"""The perturbation tests of one method on one batch (SPEC.md §3) → curve rows and AUC rows.

Accuracy at a step is against the dataset's label where the sample has one the model knows, else agreement
with the unperturbed prediction. AUC = trapezoid over (fraction, accuracy) including p = 0, × 100; the mean of
per-sample AUCs equals the AUC of the mean curve (the trapezoid is linear), so per-sample values bootstrap.
"""

from __future__ import annotations

import numpy as np
from attn_audit.models.adapters.multi_target import MultiTargetAdapter
from attn_audit.models.perturbation import perturbation_curves
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.rows import Rows
from attn_audit.tasks.evaluate.settings import EvalSettings
from attn_audit.tasks.evaluate.specs import perturbation_test
from attn_audit.tasks.labels import LabelError, LabelMap

from attn_audit import models


def auc(fractions, values) -> float:
    """Trapezoid area under (fraction, value) × 100, the p = 0 point included."""
    x, y = np.asarray(fractions, dtype=np.float64), np.asarray(values, dtype=np.float64)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2) * 100)


def _reference(label_map: LabelMap | None, sample: dict, exp) -> tuple[int | None, str]:
    """The class a perturbed prediction must match: the label's, else the unperturbed prediction (always, for a
    many-target model: its targets are the model's own detections / generated tokens; it has no label map)."""
    if sample.get("label") is not None and label_map is not None:
        try:
            return label_map.resolve(sample["label"]).index, "label"
        except LabelError:
            pass
    return exp.prediction, "prediction"


def perturbation_rows(m, batch, samples: dict[str, dict], exps: list, method: str, settings: EvalSettings,
                      curves: Rows, metrics: Rows, notes: Notes, max_rows: int | None = None,
                      label_map: LabelMap | None = None) -> None:
    """Both tests for every modality of the model, for `exps` (one method's explanations of `batch`); accuracy
    is against the samples' labels as `label_map` matches them to the model's classes."""
    position = {sid: i for i, sid in enumerate(batch.sample_ids)}
    digest = settings.digest("perturbation")
    adapter = m.adapter
    for modality in m.modalities:
        items = [x for x in exps if x.ok and x.sample_id in position and modality in x.relevance]
        notes.add(method, modality, "perturbation", "no usable map (failed sample, other modality, unreadable input)",
                  len(exps) - len(items))
        if not items:
            continue
        if modality not in adapter.perturbable_modalities:
            reason = (f"{adapter.family} models are perturbed over their {' and '.join(adapter.perturbable_modalities)}"
                      " tokens only" if adapter.perturbable_modalities
                      else f"perturbation tests are not available for {adapter.family} models")
            notes.add(method, modality, "perturbation", reason, len(items))
            continue
        mode = settings.mode_for(modality)
        if mode not in adapter.perturbation_modes:  # the evaluation passes settings.for_modes(...): not there
            notes.add(method, modality, "perturbation", f"mode {mode!r} is not available for {adapter.family} "
                      f"models (modes: {', '.join(adapter.perturbation_modes)})", len(items))
            continue
        fractions = settings.default_steps if modality in adapter.region_modalities else settings.steps_for(modality)
        result = _curves(m, batch, modality, items, position, fractions, mode, max_rows, notes, method)
        for item, probs, scores, preds in result:
            reference, against = _reference(label_map, samples[item.sample_id], item)
            for d, direction in enumerate(("positive", "negative")):
                test = perturbation_test(direction, mode)
                correct = (preds[d] == (preds[d, 0] if reference is None else reference)).astype(np.float64)
                for s, fraction in enumerate(fractions):
                    curves.add(method=method, modality=modality, perturbation=test, sample_id=item.sample_id,
                               target_index=item.target, step=s, fraction=fraction, score=scores[d, s],
                               probability=probs[d, s], accuracy=correct[s])
                details = {"eval": digest, "against": against}
                common = dict(method=method, modality=modality, sample_id=item.sample_id, target_index=item.target,
                              details=details)
                metrics.add(metric=f"auc_{test}", value=auc(fractions, correct), **common)
                metrics.add(metric=f"prob_auc_{test}", value=auc(fractions, probs[d]), **common)


def _curves(m, batch, modality, items, position, fractions, mode, max_rows, notes, method):
    """[(item, probability (D, S), score (D, S), prediction (D, S))]; a map that does not fit the re-encoded
    input (e.g. other truncation) is skipped with a note instead of failing the batch."""
    many = isinstance(m.adapter, MultiTargetAdapter)  # score the predicted class / token at the target's position

    def run(chunk):
        c = perturbation_curves(m, batch, modality, [x.relevance[modality] for x in chunk],
                                [x.prediction if many else x.target for x in chunk], fractions,
                                samples=[position[x.sample_id] for x in chunk], mode=mode, max_rows=max_rows,
                                positions=[x.target for x in chunk] if many else None)
        return list(zip(chunk, c.probability, c.score, c.prediction))

    try:
        return run(items)
    except models.AttnAuditError:
        out = []
        for item in items:
            try:
                out += run([item])
            except models.AttnAuditError:
                notes.add(method, modality, "perturbation", "map does not match the re-encoded input", 1)
        return out
