"""One forward and at most one backward pass over a batch: attention maps and their gradients.

Stock Hugging Face models return their eager attention probabilities inside the autograd graph,
so `torch.autograd.grad(Σ_b score_b, attentions)` gives every layer's ∂y_t/∂A for the whole batch
at once (the scores of different samples are independent). Weights are frozen during the pass:
no weight gradient is ever formed, only the path from the input embeddings to the score.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from models.adapters.base import Adapter
from models.batch import Batch
from models.engine.events import Capture


@dataclass
class CaptureResult:
    logits: torch.Tensor  # (B, n_targets) score table, detached
    targets: torch.Tensor  # (B,) long
    capture: Capture
    nonfinite: dict[int, str]  # batch position -> why that sample's maps cannot be trusted


@contextmanager
def gradient_path(model: torch.nn.Module, roots: list[torch.nn.Module] | None = None):
    """Freeze the weights and make the input embeddings (or the given `roots` modules) the root of the
    graph; undo on exit.

    A model without `get_input_embeddings` and no roots keeps its weights trainable: the graph then
    starts at the weights, which costs memory but gives the same gradients.
    """
    if roots is None:
        roots = [model.get_input_embeddings()] if hasattr(model, "get_input_embeddings") else []
    roots = [root for root in roots if root is not None]
    trainable = [p for p in model.parameters() if p.requires_grad] if roots else []
    for p in trainable:
        p.requires_grad_(False)
    hooks = [root.register_forward_hook(lambda _m, _i, out: out.requires_grad_(True)) for root in roots]
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
        for p in trainable:
            p.requires_grad_(True)


def autocast(device: torch.device, precision: str):
    if precision == "float32":
        return nullcontext()
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextmanager
def capture_pass(adapter: Adapter, with_gradients: bool, precision: str):
    """The context of one capture forward: gradients on or off, the adapter's gradient path, autocast."""
    device = next(adapter.model.parameters()).device
    grad_ctx = gradient_path(adapter.model, adapter.gradient_roots()) if with_gradients else nullcontext()
    with torch.set_grad_enabled(with_gradients), grad_ctx, autocast(device, precision):
        yield


def run_capture(adapter: Adapter, batch: Batch, targets: torch.Tensor | None, with_gradients: bool,
                precision: str = "float32") -> CaptureResult:
    """Run the model; `targets` None (or a -1 entry) means the sample's predicted class."""
    with capture_pass(adapter, with_gradients, precision):
        logits, capture = adapter.run(batch)
        logits = logits.float()
        predicted = logits.argmax(-1)
        chosen = predicted if targets is None else torch.where(targets.to(logits.device) >= 0,
                                                                 targets.to(logits.device), predicted)
        if with_gradients:
            scores = logits.gather(1, chosen[:, None]).squeeze(1)
            attns = [e.attn for e in capture.events]
            grads = torch.autograd.grad(scores.sum(), attns, allow_unused=True)
            for event, grad in zip(capture.events, grads):
                event.grad = torch.zeros_like(event.attn) if grad is None else grad.detach()
    for event in capture.events:
        event.attn = event.attn.detach()
    return CaptureResult(logits.detach(), chosen, capture, nonfinite_samples(logits, capture))


def nonfinite_samples(logits: torch.Tensor, capture: Capture) -> dict[int, str]:
    """Samples whose score, attention or gradient is NaN/inf; other samples are unaffected.

    One float32 sum per sample and tensor: NaN and ±inf survive a sum, and it is one pass instead
    of isfinite's several; a single host transfer at the end.
    """
    def bad(x: torch.Tensor) -> torch.Tensor:
        return ~torch.isfinite(x.sum(tuple(range(1, x.dim())), dtype=torch.float32))

    bad_score = bad(logits)
    bad_attn = torch.zeros_like(bad_score)
    bad_grad = torch.zeros_like(bad_score)
    for event in capture.events:
        bad_attn |= bad(event.attn)
        if event.grad is not None:
            bad_grad |= bad(event.grad)
    reasons = {}
    for i, (score, attn, grad) in enumerate(torch.stack([bad_score, bad_attn, bad_grad], 1).tolist()):
        if score:
            reasons[i] = "the model's output is NaN or infinite for this sample (check the input values)"
        elif attn or grad:
            reasons[i] = f"non-finite {'attention' if attn else 'gradient'} values inside the model for this sample"
    return reasons
