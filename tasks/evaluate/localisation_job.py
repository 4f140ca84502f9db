"""Localisation metrics of one method's explanations against the dataset's ground truth (SPEC.md §4) → rows.

Per map and modality: BMEQ in the three threshold modes, AUPRC and the pointing game; `combined` rows hold the
BMEQ mean over the modalities a sample has ground truth for. Samples without ground truth (or with an empty
one) are skipped and counted in notes, never an error. A target of a many-target model (a caption word, a
detection: its `target_detail`) is scored against the object it stands for (tasks/evaluate/target_localisation.py).
"""

from __future__ import annotations

import json

import numpy as np

from tasks.evaluate.ground_truth import candidates_and_truth
from tasks.evaluate.localisation import THRESHOLD_MODES, localisation_scores
from tasks.evaluate.notes import Notes
from tasks.evaluate.rows import Rows
from tasks.evaluate.settings import EvalSettings
from tasks.evaluate.target_localisation import target_scores


def localisation_rows(samples: dict[str, dict], exps: list, method: str, settings: EvalSettings, metrics: Rows,
                      notes: Notes) -> None:
    details = {"eval": settings.digest("localisation")}
    for exp in exps:
        sample = samples.get(exp.sample_id)
        if sample is None or not exp.ok:
            notes.add(method, None, "localisation", "sample or map unavailable")
            continue
        bmeq_by_modality = []
        detail = json.loads(exp.target_detail) if getattr(exp, "target_detail", None) else None
        for modality, relevance in exp.relevance.items():
            scores = _scores(sample, exp, modality, relevance, detail, settings)
            if isinstance(scores, str):
                notes.add(method, modality, "localisation", scores)
                continue
            bmeq_by_modality.append(scores)
            for metric, value in scores.items():
                metrics.add(method=method, metric=metric, modality=modality, sample_id=exp.sample_id,
                            target_index=exp.target, value=value, details=details)
        for mode in THRESHOLD_MODES if bmeq_by_modality else ():
            value = float(np.mean([s[f"bmeq_{mode}"] for s in bmeq_by_modality]))
            metrics.add(method=method, metric=f"bmeq_{mode}", modality="combined", sample_id=exp.sample_id,
                        target_index=exp.target, value=value, details=details)


def _scores(sample: dict, exp, modality: str, relevance, detail: dict | None, settings: EvalSettings) -> dict | str:
    """The metrics of one map, or why it has none."""
    knobs = dict(tau=settings.tau, top_k=settings.top_k, alpha=settings.alpha)
    if detail is not None and ("position" in detail or "box" in detail):
        if modality == "text" and "text" in sample and (sample.get("ground_truth") or {}).get("text_tokens"):
            return _prompt_scores(sample, exp, relevance, knobs)  # a causal LM's token: the prompt's ground truth
        if modality != "image":
            return "no ground truth for a target's map over earlier tokens"
        return target_scores(sample, relevance, detail, **knobs)
    found = candidates_and_truth(sample, modality, relevance, exp.tokens.get(modality), exp.special.get(modality))
    if isinstance(found, str):
        return found
    return localisation_scores(*found, **knobs) or "empty ground truth"


def _prompt_scores(sample: dict, exp, relevance, knobs: dict) -> dict | str:
    """A generated token's map over the prompt and earlier generated tokens, scored on the prompt's words only
    (the ground truth names prompt words; the generated ones are not candidates). The ground truth is the answer's:
    only the first generated token is scored (later ones, an end token, follow from it)."""
    if exp.target != 0:
        return "the ground truth is the answer's (the first generated token); later generated tokens are not scored"
    found = candidates_and_truth(sample, "text", relevance, exp.tokens.get("text"), exp.special.get("text"))
    if isinstance(found, str):
        return found
    n_prompt = len(sample["text"].split())
    values, truth = found
    return localisation_scores(values[:n_prompt], truth[:n_prompt], **knobs) or "empty ground truth"
