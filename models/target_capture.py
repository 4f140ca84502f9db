"""One forward pass and one batched vector–Jacobian product for every target of every sample.

A sample's targets (its detections, its generated tokens) share the sample's forward pass. Their gradients
come from one `autograd.grad(..., is_grads_batched=True)`: seed vector j marks the j-th target of every
sample at once (samples are independent, so one vector serves the whole batch), so the backward runs as
many times as the largest per-sample target count, vectorised, never once per target. The capture is then
laid out with one row per target — attention of its sample, gradient of its own score — so the relevancy
methods run on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.adapters.multi_target import MultiTargetAdapter, Targets
from models.batch import Batch
from models.capture import CapturePlan, backward_through, capture_pass, nonfinite_samples, prepare_backward
from models.engine.events import Capture


@dataclass
class TargetCaptureResult:
    scores: torch.Tensor  # (T,) the explained pre-softmax scores, detached
    probabilities: torch.Tensor  # (T,) their softmax probabilities over the score table's last axis
    targets: Targets
    capture: Capture  # one row per target
    nonfinite: dict[int, str]  # target row -> why its maps cannot be trusted


def run_target_capture(adapter: MultiTargetAdapter, batch: Batch, plan: CapturePlan,
                       precision: str = "float32") -> TargetCaptureResult:
    with capture_pass(adapter, plan, precision) as recorder:
        logits, capture = adapter.run(batch)
        logits = logits.float()
        targets = adapter.select_targets(batch, logits.detach())
        scores = logits.flatten(1)[targets.sample, targets.score_index]
        if plan.with_gradients and plan.fused:
            _fused_gradients(adapter, recorder, scores, capture, targets)
        elif plan.with_gradients:
            _batched_gradients(scores, capture, targets)
    probabilities = torch.softmax(logits.detach(), -1).flatten(1)[targets.sample, targets.score_index]
    per_target = per_target_capture(capture, targets)
    return TargetCaptureResult(scores.detach(), probabilities, targets, per_target,
                               nonfinite_samples(scores.detach()[:, None], per_target))


def _batched_gradients(scores: torch.Tensor, capture: Capture, targets: Targets) -> None:
    """event.grad = (k, B, heads, q, k) where [j, b] is ∂(score of b's j-th target)/∂A (zero if b has fewer)."""
    live = [e for e in capture.events if e.attn.requires_grad]
    k = int(targets.slot.max()) + 1 if len(targets) else 0
    grads = [None] * len(live)
    if k and live:
        seeds = torch.nn.functional.one_hot(targets.slot, k).T.to(scores.dtype)  # (k, T)
        grads = torch.autograd.grad(scores, [e.attn for e in live], grad_outputs=seeds, is_grads_batched=True,
                                    allow_unused=True)
    for event, grad in zip(live, grads):
        event.grad = grad.detach() if grad is not None else None
    for event in capture.events:  # no graph (e.g. DETR's first decoder self-attention) or unused: zero
        event.attn = event.attn.detach()
        if event.grad is None:
            event.grad = event.attn.new_zeros((k, *event.attn.shape))


def _fused_gradients(adapter: MultiTargetAdapter, recorder, scores: torch.Tensor, capture: Capture,
                     targets: Targets) -> None:
    """One backward per seed slot j (the j-th target of every sample at once); each fused layer keeps its
    statistics per slot. The fused function is no vmap rule, so the slots run one after the other."""
    k = int(targets.slot.max()) + 1 if len(targets) else 0
    recorder.slots = k
    prepare_backward(capture, recorder, frozenset())
    seeds = torch.nn.functional.one_hot(targets.slot, k).T.to(scores.dtype) if k else None  # (k, T)
    for j in range(k):
        recorder.slot = j
        backward_through(adapter, scores, seeds[j], retain_graph=j < k - 1)


def per_target_capture(capture: Capture, targets: Targets) -> Capture:
    """Row t = sample targets.sample[t]'s attention with target t's own gradient and readout."""
    rows, slots = targets.sample, targets.slot
    events = [e.per_target(rows, slots) for e in capture.events]
    masks = {m: mask[rows] for m, mask in capture.masks.items()}
    return Capture(events, masks, targets.readouts)
