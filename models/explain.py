"""`explain(m, inputs, method, target)`: one capture serves every requested method."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import torch
from attn_audit.models.adapters.multi_target import MultiTargetAdapter
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.batch import Batch
from attn_audit.models.capture import capture_plans
from attn_audit.models.errors import AttnAuditError, SampleError
from attn_audit.models.loaded import LoadedModel
from attn_audit.models.lrp.passes import modified_pass
from attn_audit.models.methods import Method, finalize_rows, get_method
from attn_audit.models.run_capture import CaptureResult, run_capture
from attn_audit.storage.explanation import Explanation

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
    NaN/inf come back with `error` set and no maps, so nothing is dropped silently. A sample without targets
    (no detections) gets one map-less explanation per method carrying its note.
    """
    methods = [get_method(x) for x in ([method] if isinstance(method, str | Method) else method)]
    names = [x.spec for x in methods]
    inputs = as_batch(m, inputs)
    out = [Explanation(f.sample_id, name, None, error=f.message, error_stage=f.stage)
           for f in inputs.failures for name in names]
    if inputs.size == 0:
        return out
    batch = inputs.to(m.device)
    if target is not None and isinstance(m.adapter, MultiTargetAdapter):
        raise AttnAuditError(f"{m.adapter.family} models explain every target they produce (each detection / "
                             "generated token); leave target=None")
    requested = resolve_targets(target, batch, m.num_classes)
    result, maps = _run_passes(m, batch, methods, requested)
    return out + _explanations(m, batch, result, names, maps)


def _run_passes(m: LoadedModel, batch: Batch, methods: Sequence[Method], requested: torch.Tensor | None):
    """(the first pass's result, which chose the targets; {method spec: (rows as numpy, notes and errors by row)}):
    every pass of the plan (models/capture.py: capture_plans) for the same targets."""
    first, maps = None, {}
    for plan, group in capture_plans(m, methods):  # the first is never a modified-gradient pass: it picks targets
        if plan.modified:
            first.capture.lrp[plan.modified] = modified_pass(m.adapter, batch, first.targets, plan.modified,
                                                             m.precision)
            result = first
        else:
            again = None if first is None else torch.as_tensor(first.targets.index, dtype=torch.long)
            result = run_capture(m.adapter, batch, plan, m.precision, requested if first is None else again)
            first = first or result
        for x in group:
            rows = finalize_rows(m.adapter.attribute(x, result.capture, batch, result.targets), result.capture,
                                 x.identity)
            notes = x.notes(result.capture) if len(first.targets) else {}
            errors = {t: f"{x.spec}: non-finite relevance" for t in _nonfinite(rows)}
            maps[x.spec] = ({k: v.cpu().numpy() for k, v in rows.items()}, notes, errors)
    return first, maps


def _nonfinite(rows: dict[str, torch.Tensor]) -> list[int]:
    bad = sum(~torch.isfinite(r).all(-1) for r in rows.values())
    return torch.nonzero(bad).flatten().tolist() if isinstance(bad, torch.Tensor) else []


def _explanations(m: LoadedModel, batch: Batch, result: CaptureResult, names: Sequence[str],
                  maps: dict[str, tuple[dict, dict[int, str], dict[int, str]]]) -> list[Explanation]:
    targets = result.targets
    scores, probs, owners = result.scores.cpu().tolist(), result.probabilities.cpu().tolist(), targets.sample.tolist()
    notes = _notes(batch, targets)
    out = []
    for i, sid in enumerate(batch.sample_ids):
        note = notes.get(i)
        own = [t for t, owner in enumerate(owners) if owner == i]
        if not own:
            out += [Explanation(sid, name, None, target_detail=json.dumps({"note": note}), note=note) for name in names]
        for t in own:
            detail = targets.details[t] | ({"note": note} if note else {})
            common = dict(target=targets.index[t], target_label=targets.labels[t], score=scores[t],
                          probability=probs[t], prediction=targets.predictions[t],
                          target_detail=json.dumps(detail) if detail else None)
            for name in names:
                rows, method_notes, errors = maps[name]
                error = result.nonfinite.get(t) or errors.get(t)
                if error:
                    out.append(Explanation(sid, name, error=error, error_stage="explain", note=note, **common))
                    continue
                shown = "; ".join(n for n in (note, method_notes.get(t)) if n) or None
                sample_maps = m.adapter.target_maps(rows, batch, targets, t)
                out.append(Explanation(sid, name, relevance=sample_maps.relevance, tokens=sample_maps.tokens,
                                       special=sample_maps.special, note=shown, **common))
    return out


def _notes(batch: Batch, targets: Targets) -> dict[int, str]:
    """Batch position -> note: the input's (e.g. a truncated text) and the targets' (no detections, length limit)."""
    given = {i: note for i, note in enumerate(batch.meta.get("notes") or []) if note}
    return {i: "; ".join(n for n in (given.get(i), targets.notes.get(i)) if n) for i in given.keys() | targets.notes}
