"""The context of a capture pass (models/run_capture.py): what it records, gradients, precision, the fused
attention function, and the finiteness check of what it recorded.

Stock Hugging Face models return their eager attention probabilities inside the autograd graph,
so `torch.autograd.grad(Σ_b score_b, attentions)` gives every layer's ∂y_t/∂A for the whole batch
at once (the scores of different samples are independent). Weights are frozen during the pass:
no weight gradient is ever formed, only the path from the input embeddings to the score.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from attn_audit.models.adapters.base import Adapter
from attn_audit.models.engine.events import Capture
from attn_audit.models.engine.fused import BACKWARD_STATS, fused_capture
from attn_audit.models.methods.registry import check_family

MODIFIED_RULES = ("attnlrp", "cp_lrp")  # passes of their own under modified-gradient rules (models/lrp/passes.py)


@contextmanager
def gradient_path(model: torch.nn.Module, roots: list[torch.nn.Module] | None = None,
                  root_parameters: list[torch.nn.Parameter] = ()):
    """Freeze the weights (but `root_parameters`) and make the input embeddings (or the given `roots` modules)
    the root of the graph; undo on exit (the root parameters' .grad too).

    A model without `get_input_embeddings` and no roots keeps its weights trainable: the graph then
    starts at the weights, which costs memory but gives the same gradients.
    """
    if roots is None:
        roots = [model.get_input_embeddings()] if hasattr(model, "get_input_embeddings") else []
    roots = [root for root in roots if root is not None]
    kept = {id(p) for p in root_parameters}
    trainable = [p for p in model.parameters() if p.requires_grad and id(p) not in kept] if roots else []
    for p in trainable:
        p.requires_grad_(False)
    was = [(p, p.requires_grad, p.grad) for p in root_parameters]
    for p in root_parameters:
        p.requires_grad_(True)
    hooks = [root.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True)) for root in roots]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for p in trainable:
            p.requires_grad_(True)
        for p, requires_grad, grad in was:
            p.requires_grad_(requires_grad)
            p.grad = grad


def autocast(device: torch.device, precision: str):
    if precision == "float32":
        return nullcontext()
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class CapturePlan:
    """How one pass captures: `fused` (memory-light, models/engine/fused.py) or eager, and what the requested
    methods need from each attention layer (the union of their `needs`)."""

    fused: bool
    needs: frozenset[str]

    @property
    def with_gradients(self) -> bool:
        return any(n in BACKWARD_STATS or n.startswith("row:") or n == "attention_gradient" for n in self.needs)

    @property
    def lrp_needs(self) -> list[str]:
        """The Chefer-rule reverse passes ("lrp:RULES:DTYPE") to run over this eager pass's recorded tensors."""
        return sorted(n for n in self.needs if n.startswith("lrp:"))

    @property
    def modified(self) -> str | None:
        """The need ("attnlrp:DTYPE" / "cp_lrp:DTYPE") of a pass under modified-gradient rules, else None."""
        return next((n for n in self.needs if n.split(":")[0] in MODIFIED_RULES), None)


def capture_plan(m, methods) -> CapturePlan:
    """The pass the attention methods need on loaded model `m` (fused unless the model asks for eager or cannot)."""
    fused = m.capture == "fused" and m.adapter.supports_fused
    rows = fused and m.adapter.pure_self_attention  # readout rows can be propagated during the backward
    return CapturePlan(fused, frozenset().union(*(x.needs_for(rows) for x in methods)))


def capture_plans(m, methods) -> list[tuple[CapturePlan, list]]:
    """As few passes as the methods' needs allow, the pass that chooses the targets first: the attention methods'
    (fused or eager); the LRP family's recorded eager pass (the attention methods join it when theirs would be
    eager too); one pass per modified-gradient rule. A family a method does not run on is refused here."""
    for x in methods:
        check_family(x, m.adapter.family)
    modified = [x for x in methods if x.needs & set(MODIFIED_RULES)]
    recorded = [x for x in methods if x not in modified and any(n.startswith("lrp:") for n in x.needs)]
    plain = [x for x in methods if x not in modified and x not in recorded]
    main = capture_plan(m, plain)
    wide = any(x.config.get("dtype") == "float64" for x in recorded)  # a float64 pass is a check of its own
    separate = not recorded or bool(plain) and (main.fused or wide)
    plans = [(main, plain)] if separate else []
    if recorded:
        joined = recorded if separate else recorded + plain
        plans.append((CapturePlan(False, frozenset().union(*(x.needs_for(False) for x in joined))), joined))
    for need in sorted({x.need for x in modified}):
        plans.append((CapturePlan(False, frozenset({need})), [x for x in modified if x.need == need]))
    return plans


@contextmanager
def capture_pass(adapter: Adapter, plan: CapturePlan, precision: str):
    """The context of one capture forward: gradients on or off, the adapter's gradient path, autocast, and the
    fused attention function when the plan is fused. Yields its Recorder (None for eager)."""
    device = next(adapter.model.parameters()).device
    grad_ctx = gradient_path(adapter.model, adapter.gradient_roots(), adapter.gradient_root_parameters()) \
        if plan.with_gradients else nullcontext()
    fused = fused_capture(adapter.attention_model, plan.needs) if plan.fused else nullcontext()
    with torch.set_grad_enabled(plan.with_gradients), grad_ctx, autocast(device, precision), fused as recorder:
        yield recorder


def prepare_backward(capture: Capture, needs: frozenset[str]) -> None:
    """What the fused layers need to know before the backward: which of their query / key tokens are real
    (Grad-CAM head weights, row propagation), and for readout rows propagated during the backward ("row:S"
    needs, pure self-attention), each self-attention layer's stream and depth (the driver sets the starting rows
    of each seed slot on the recorder)."""
    for event in capture.events:
        if event.fused:
            event.record.query_valid, event.record.key_valid = capture.masks[event.query], capture.masks[event.key]
    if not any(n.startswith("row:") for n in needs):
        return
    for m in capture.masks:
        stream = capture.events_of(m, m)
        for i, event in enumerate(stream):
            event.record.stream, event.record.layer, event.record.layers = m, i, len(stream)


def backward_through(adapter: Adapter, outputs: torch.Tensor, grad_outputs: torch.Tensor | None = None,
                     retain_graph: bool = False) -> None:
    """The one backward pass of a fused capture: every attention layer on the path from the inputs to `outputs`
    receives its ∂y/∂O and records what its methods need. No weight gradient is kept (nor, with the weights
    frozen, formed)."""
    if not outputs.requires_grad:
        return
    roots = {id(p) for p in adapter.gradient_root_parameters()}
    trainable = [p for p in adapter.model.parameters() if p.requires_grad and id(p) not in roots]
    if trainable:  # a model whose graph starts at its weights: gradients computed and dropped, .grad untouched
        torch.autograd.grad(outputs, trainable, grad_outputs, retain_graph=retain_graph, allow_unused=True)
    else:  # reaches every layer on a path from the inputs; root parameters' .grad is restored by gradient_path
        torch.autograd.backward(outputs, grad_outputs, retain_graph=retain_graph)


def nonfinite_rows(scores: torch.Tensor, capture: Capture) -> dict[int, str]:
    """Rows (targets) whose scores (R, ...), attention or gradient are NaN/inf; other rows are unaffected.

    One float32 sum per sample and tensor: NaN and ±inf survive a sum, and it is one pass instead
    of isfinite's several; a single host transfer at the end.
    """
    def bad(x: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(x.sum(tuple(range(1, x.dim())), dtype=torch.float32))

    bad_score = bad(scores)
    bad_attn = torch.zeros_like(bad_score)
    bad_grad = torch.zeros_like(bad_score)
    for event in capture.events:
        for is_grad, tensor in event.tensors():
            if is_grad:
                bad_grad |= bad(tensor)
            else:
                bad_attn |= bad(tensor)
    for rows in capture.propagated.values():  # readout rows propagated in a fused backward hold the gradient
        for row in rows.values():
            bad_grad |= bad(row)
    reasons = {}
    for i, (score, attn, grad) in enumerate(torch.stack([bad_score, bad_attn, bad_grad], 1).tolist()):
        if score:
            reasons[i] = "the model's output is NaN or infinite for this sample (check the input values)"
        elif attn or grad:
            reasons[i] = f"non-finite {'attention' if attn else 'gradient'} values inside the model for this sample"
    return reasons
