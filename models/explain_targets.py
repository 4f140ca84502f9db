"""Explanations of models with many targets per sample: one per (sample, target, method), sample-major."""

from __future__ import annotations

import json
from collections.abc import Sequence

from models.batch import Batch
from models.capture import capture_plan
from models.explanation import Explanation
from models.loaded import LoadedModel
from models.methods import Method, finalize_rows
from models.target_capture import run_target_capture


def explain_targets(m: LoadedModel, batch: Batch, names: Sequence[str], methods: Sequence[Method]) -> list[Explanation]:
    """A sample without targets (no detections) gets one map-less explanation per method carrying its note."""
    result = run_target_capture(m.adapter, batch, capture_plan(m, methods), m.precision)
    targets = result.targets
    rows = {name: {k: v.cpu().numpy() for k, v in finalize_rows(x.attribute(result.capture), result.capture).items()}
            for name, x in zip(names, methods)} if len(targets) else {}
    scores, probs, owners = result.scores.cpu().tolist(), result.probabilities.cpu().tolist(), targets.sample.tolist()
    out = []
    for i, sid in enumerate(batch.sample_ids):
        note = targets.notes.get(i)
        own = [t for t, owner in enumerate(owners) if owner == i]
        if not own:
            out += [Explanation(sid, name, None, target_detail=json.dumps({"note": note}), note=note) for name in names]
        for t in own:
            detail = targets.details[t] | ({"note": note} if note else {})
            common = dict(target=targets.index[t], target_label=targets.labels[t], score=scores[t],
                          probability=probs[t], prediction=targets.predictions[t],
                          target_detail=json.dumps(detail), note=note)
            for name in names:
                if t in result.nonfinite:
                    out.append(Explanation(sid, name, error=result.nonfinite[t], error_stage="explain", **common))
                    continue
                maps = m.adapter.target_maps(rows[name], batch, targets, t)
                out.append(Explanation(sid, name, relevance=maps.relevance, tokens=maps.tokens,
                                       special=maps.special, **common))
    return out
