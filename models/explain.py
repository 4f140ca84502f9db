"""`explain(m, inputs, method, target)`: one capture serves every requested method."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import torch

from models.adapters.multi_target import MultiTargetAdapter
from models.batch import Batch
from models.capture import capture_plan, run_capture
from models.errors import AttnAuditError, SampleError
from models.explain_targets import explain_targets
from models.explanation import Explanation
from models.loaded import LoadedModel
from models.methods import Method, finalize_rows, get_method

Target = int | Sequence[int | None] | None


def resolve_targets(target: Target, batch: Batch, n_classes: int) -> torch.Tensor | None:
    """None → predicted class; an int for every sample; or one entry per sample (None → predicted)."""
    if target is None:
        return None
    if isinstance(target, int):
        if not 0 <= target < n_classes:
            raise AttnAuditError(f"target {target} is out of range: the model has {n_classes} classes "
                                 f"(0–{n_classes - 1})")
        return torch.full((batch.size,), target, dtype=torch.long)
    target = _per_kept_sample(list(target), batch)
    for sid, t in zip(batch.sample_ids, target):
        if t is not None and not 0 <= int(t) < n_classes:
            raise SampleError(sid, "target", f"target {t} is out of range: the model has {n_classes} "
                              f"classes (0–{n_classes - 1})")
    return torch.tensor([-1 if t is None else int(t) for t in target], dtype=torch.long)


def as_batch(m: LoadedModel, inputs) -> Batch:
    """`inputs` as a Batch: itself, or a mapping of tensors (a tokenizer's BatchEncoding, a processor's
    BatchFeature, a dict) whose sample ids are their positions."""
    if isinstance(inputs, Batch):
        return inputs
    if isinstance(inputs, Mapping):
        return m.adapter.batch_from_tensors({k: v for k, v in inputs.items() if v is not None})
    raise AttnAuditError(f"explain takes what m.preprocess(samples) returns or a mapping of tensors (e.g. a "
                         f"tokenizer's output), got {type(inputs).__name__}")


def _per_kept_sample(target: list, batch: Batch) -> list:
    """Per-sample targets given for every sample passed to preprocess (failed ones included), or for the samples
    that were kept: those of the kept samples."""
    if len(target) == batch.size:
        return target
    positions = batch.given_positions()
    if positions is not None and len(target) == batch.size + len(batch.failures):
        return [target[p] for p in positions]
    given = batch.size + len(batch.failures)
    raise AttnAuditError(f"got {len(target)} targets for {given} samples ({len(batch.failures)} failed "
                         "preprocessing); give one per sample given to preprocess")


def explain(m: LoadedModel, inputs: Batch | Mapping, method: str | Method | Sequence[str | Method] = "chefer2021",
            target: Target = None) -> list[Explanation]:
    """Explanations for every sample of `inputs` and every method, sample-major; for models with many
    targets per sample (detectors, generators) one per (sample, target, method).

    Samples that failed preprocessing (collected in `inputs.failures`) or whose pass produced
    NaN/inf come back with `error` set and no maps, so nothing is dropped silently.
    """
    methods = [get_method(x) for x in ([method] if isinstance(method, str | Method) else method)]
    names = [x.spec for x in methods]
    inputs = as_batch(m, inputs)
    out = [Explanation(f.sample_id, name, None, error=f.message, error_stage=f.stage)
           for f in inputs.failures for name in names]
    if inputs.size == 0:
        return out
    batch = inputs.to(m.device)
    if isinstance(m.adapter, MultiTargetAdapter):
        if target is not None:
            raise AttnAuditError(f"{m.adapter.family} models explain every target they produce (each detection / "
                                 "generated token); leave target=None")
        return out + explain_targets(m, batch, names, methods)
    labels = m.label_names
    targets = resolve_targets(target, batch, m.num_classes)
    result = run_capture(m.adapter, batch, targets, capture_plan(m, methods), m.precision)
    rows = {name: {k: v.cpu().numpy() for k, v in finalize_rows(x.attribute(result.capture), result.capture).items()}
            for name, x in zip(names, methods)}
    probs = torch.softmax(result.logits, -1).cpu()
    logits, chosen, predicted = result.logits.cpu(), result.targets.cpu().tolist(), result.logits.argmax(-1).tolist()
    notes = batch.meta.get("notes") or [None] * batch.size  # e.g. a truncated text
    for i, sid in enumerate(batch.sample_ids):
        t = chosen[i]
        common = dict(target=t, target_label=labels[t] if labels else None, score=float(logits[i, t]),
                      probability=float(probs[i, t]), prediction=predicted[i], note=notes[i],
                      target_detail=json.dumps({"note": notes[i]}) if notes[i] else None)
        for name in names:
            if i in result.nonfinite:
                out.append(Explanation(sid, name, error=result.nonfinite[i], error_stage="explain", **common))
                continue
            maps = m.adapter.maps(rows[name], batch, i)
            out.append(Explanation(sid, name, relevance=maps.relevance, tokens=maps.tokens,
                                   special=maps.special, **common))
    return out

