"""The one capture pass of every model: a forward, then one backward per seed slot, for every target of the batch.

A classifier has one target per sample (the requested or predicted class); detectors and generators list their
own (detections, generated tokens; MultiTargetAdapter). Targets of one sample share its forward pass. Their
gradients come from one vector–Jacobian product per seed slot: seed vector j marks the j-th target of every
sample at once (samples are independent, so one vector serves the whole batch), so the backward runs as many
times as the largest per-sample target count — once for a classifier — never once per target. Eager captures
batch the slots in one `autograd.grad(..., is_grads_batched=True)`. The capture is then laid out with one row per
target — attention of its sample, gradient of its own score — so the relevancy methods run on it unchanged.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from attn_audit.models.adapters.base import Adapter
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.batch import Batch
from attn_audit.models.capture import CapturePlan, backward_through, capture_pass, nonfinite_rows, prepare_backward
from attn_audit.models.engine.events import Capture
from attn_audit.models.lrp.passes import promoted, relevance_of_record
from attn_audit.models.lrp.record import record


@dataclass
class CaptureResult:
    scores: torch.Tensor  # (T,) the explained pre-softmax scores, detached
    probabilities: torch.Tensor  # (T,) their softmax probabilities over the score table's last axis
    targets: Targets
    capture: Capture  # one row per target
    nonfinite: dict[int, str]  # target row -> why its maps cannot be trusted


def run_capture(adapter: Adapter, batch: Batch, plan: CapturePlan, precision: str = "float32",
                requested: torch.Tensor | None = None) -> CaptureResult:
    """`requested` (B,) classes for a classifier's samples (-1: the predicted class); None: all predicted."""
    wide = any(need.endswith(":float64") for need in plan.lrp_needs)  # the whole recorded pass in float64
    with promoted(adapter.model, torch.float64 if wide else torch.float32), \
            capture_pass(adapter, plan, "float32" if wide else precision) as recorder, \
            (record(adapter.model) if plan.lrp_needs else nullcontext()) as recorded:
        logits, capture = adapter.run(batch.floats_as(torch.float64) if wide else batch)
        logits = logits.float()
        targets = adapter.select_targets(batch, logits.detach(), capture,
                                         None if requested is None else requested.to(logits.device))
        scores = logits.flatten(1)[targets.sample, targets.score_index]
        if plan.with_gradients and plan.fused:
            _fused_gradients(adapter, recorder, scores, capture, targets, plan)
        elif plan.with_gradients:
            _eager_gradients(scores, capture, targets)
    for need in plan.lrp_needs:  # the Chefer-rule reverse passes over the tensors the forward recorded
        capture.lrp[need] = relevance_of_record(recorded, adapter, targets, need)
    for event in capture.events:
        event.attn = event.attn.detach()
    probabilities = torch.softmax(logits.detach(), -1).flatten(1)[targets.sample, targets.score_index]
    per_target = per_target_capture(capture, targets)
    scores = scores.detach()
    return CaptureResult(scores, probabilities, targets, per_target,
                         nonfinite_rows(torch.stack([scores, probabilities], 1), per_target))


def _slots(targets: Targets) -> int:
    return int(targets.slot.max()) + 1 if len(targets) else 0


def _seeds(scores: torch.Tensor, targets: Targets, k: int) -> torch.Tensor:
    """(k, T): row j is 1 at every sample's j-th target."""
    return torch.nn.functional.one_hot(targets.slot, k).T.to(scores.dtype)


def _eager_gradients(scores: torch.Tensor, capture: Capture, targets: Targets) -> None:
    """event.grad = ∂(score)/∂A: (B, heads, q, k) with one slot, else (k, B, heads, q, k) where [j, b] is for b's
    j-th target (zero if b has fewer)."""
    live = [e for e in capture.events if e.attn.requires_grad]
    k = _slots(targets)
    grads = [None] * len(live)
    if k == 1 and live:
        grads = torch.autograd.grad(scores.sum(), [e.attn for e in live], allow_unused=True)
    elif k and live:
        grads = torch.autograd.grad(scores, [e.attn for e in live], grad_outputs=_seeds(scores, targets, k),
                                    is_grads_batched=True, allow_unused=True)
    for event, grad in zip(live, grads):
        event.grad = grad.detach() if grad is not None else None
    for event in capture.events:  # no graph (a map of parameters only) or unused: zero
        if event.grad is None:
            event.grad = event.attn.new_zeros(event.attn.shape if k == 1 else (k, *event.attn.shape))


def _fused_gradients(adapter: Adapter, recorder, scores: torch.Tensor, capture: Capture, targets: Targets,
                     plan: CapturePlan) -> None:
    """One backward per seed slot j (the j-th target of every sample at once); with several slots each fused
    layer keeps its statistics per slot. The fused function is no vmap rule, so the slots run one after the other.
    Readout rows ("row:S" needs) start as slot j's targets' readouts and are propagated during its backward."""
    k = _slots(targets)
    recorder.slots = k if k > 1 else 0
    prepare_backward(capture, plan.needs)
    names = sorted(n for n in plan.needs if n.startswith("row:"))
    starts = {m: r.weights.float() for m, r in targets.readouts.items() if r.source == m}
    propagated = {name: {m: torch.zeros_like(w) for m, w in starts.items()} for name in names}
    seeds = _seeds(scores, targets, k) if k else None
    for j in range(k):
        recorder.slot, own = j, targets.slot == j
        slot_rows = {m: w.new_zeros((len(capture.masks[m]), w.shape[1])).index_copy(0, targets.sample[own], w[own])
                     for m, w in starts.items()}  # (B, n): each sample's j-th target (zero if it has fewer)
        recorder.rows = {name: dict(slot_rows) for name in names}
        backward_through(adapter, scores, seeds[j], retain_graph=j < k - 1)
        for name in names:
            for m, row in recorder.rows[name].items():
                propagated[name][m][own] = row[targets.sample[own]]
    capture.propagated = propagated


def per_target_capture(capture: Capture, targets: Targets) -> Capture:
    """Row t = sample targets.sample[t]'s attention with target t's own gradient and readout."""
    b = next(iter(capture.masks.values())).shape[0]
    if targets.is_one_per_sample(b):  # a classifier: the capture is already laid out per target
        return Capture(capture.events, capture.masks, targets.readouts, capture.propagated, capture.lrp)
    rows, slots = targets.sample, targets.slot
    events = [e.per_target(rows, slots) for e in capture.events]
    masks = {m: mask[rows] for m, mask in capture.masks.items()}
    return Capture(events, masks, targets.readouts, capture.propagated)
