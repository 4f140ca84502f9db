"""Localisation metrics of one method's explanations against the dataset's ground truth (SPEC.md §4) → rows.

Per map and modality: BMEQ in the three threshold modes, AUPRC and the pointing game; `combined` rows hold the
BMEQ mean over the modalities a sample has ground truth for. Samples without ground truth (or with an empty
one) are skipped and counted in notes, never an error.
"""

from __future__ import annotations

import numpy as np

from tasks.evaluate.ground_truth import candidates_and_truth
from tasks.evaluate.localisation import THRESHOLD_MODES, localisation_scores
from tasks.evaluate.notes import Notes
from tasks.evaluate.rows import Rows
from tasks.evaluate.settings import EvalSettings


def localisation_rows(samples: dict[str, dict], exps: list, method: str, settings: EvalSettings, metrics: Rows,
                      notes: Notes) -> None:
    details = {"eval": settings.digest("localisation")}
    for exp in exps:
        sample = samples.get(exp.sample_id)
        if sample is None or not exp.ok:
            notes.add(method, None, "localisation", "sample or map unavailable")
            continue
        bmeq_by_modality = []
        for modality, relevance in exp.relevance.items():
            found = candidates_and_truth(sample, modality, relevance, exp.tokens.get(modality),
                                         exp.special.get(modality))
            if isinstance(found, str):
                notes.add(method, modality, "localisation", found)
                continue
            scores = localisation_scores(*found, tau=settings.tau, top_k=settings.top_k, alpha=settings.alpha)
            if not scores:
                notes.add(method, modality, "localisation", "empty ground truth")
                continue
            bmeq_by_modality.append(scores)
            for metric, value in scores.items():
                metrics.add(method=method, metric=metric, modality=modality, sample_id=exp.sample_id,
                            target_index=exp.target, value=value, details=details)
        for mode in THRESHOLD_MODES if bmeq_by_modality else ():
            value = float(np.mean([s[f"bmeq_{mode}"] for s in bmeq_by_modality]))
            metrics.add(method=method, metric=f"bmeq_{mode}", modality="combined", sample_id=exp.sample_id,
                        target_index=exp.target, value=value, details=details)
