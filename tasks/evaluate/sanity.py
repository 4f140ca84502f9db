"""Sanity check (SPEC.md §5.1, on the run's first `sanity_samples`): cascading randomisation of the model,
explanations recomputed after each step, Spearman rank correlation with the original map per sample
→ `sanity_spearman@<step>` rows.

A faithful method decorrelates as more of the model is randomised (lower is better). Text maps are compared
without their special tokens. The original maps are the stored ones; the targets are the stored targets. Models that
choose their own targets (captioners, DETR, LMs) are skipped with a note saying why.
"""

from __future__ import annotations

import numpy as np
from attn_audit.models.adapters.multi_target import MultiTargetAdapter
from attn_audit.models.randomization import cascading_randomization
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.rows import Rows
from attn_audit.tasks.evaluate.settings import EvalSettings
from scipy.stats import spearmanr

from attn_audit import models


def _flat(exp, modality: str) -> np.ndarray:
    values = np.asarray(exp.relevance[modality], dtype=np.float64).ravel()
    special = exp.special.get(modality)
    return values if special is None else values[~np.asarray(special, bool)]


def sanity_rows(m, batch, originals: dict[str, list], settings: EvalSettings, metrics: dict[str, Rows],
                notes: Notes) -> None:
    """`originals[method]`: the stored explanations of `batch`'s samples; rows go to `metrics[method]`."""
    if isinstance(m.adapter, MultiTargetAdapter):
        for method in originals:
            notes.add(method, None, "sanity", f"not available for {m.adapter.family} models: they choose their own "
                      "targets (generated tokens, detections), and a randomised model chooses others, so there is "
                      "no map of a stored target to compare with", batch.size)
        return
    stored = {(x.sample_id, x.method): x for exps in originals.values() for x in exps if x.ok}
    targets = {x.sample_id: x.target for x in stored.values()}
    if not any(sid in targets for sid in batch.sample_ids):
        return
    details = {"eval": settings.digest("sanity")}
    chosen = [targets.get(sid) for sid in batch.sample_ids]  # None: a sample without maps, explained as predicted
    for k, (step, randomized) in enumerate(cascading_randomization(m, settings.seed)):
        for new in models.explain(randomized, batch, list(originals), target=chosen):
            old = stored.get((new.sample_id, new.method))
            if old is None or not new.ok:
                continue
            for modality in old.relevance:
                rho = spearmanr(_flat(old, modality), _flat(new, modality)).statistic
                if not np.isfinite(rho):
                    notes.add(new.method, modality, "sanity", f"constant map after randomising {step}")
                    continue
                metrics[new.method].add(method=new.method, metric=f"sanity_spearman@{step}", modality=modality,
                                        sample_id=new.sample_id, target_index=old.target, value=float(rho),
                                        details={**details, "step": k})
