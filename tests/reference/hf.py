"""Per-sample explanation of a stock Hugging Face classifier, in the reference code's style.

One sample (batch of 1, no padding), eager attention, ``output_attentions=True``, ``.retain_grad()``
on every returned attention map, ``score.backward()``, then the full-matrix rules of ``rules.py``
in float64 with an explicit loop over layers. Slow on purpose; used only to check the production
engine.

Works for ViT / DeiT ``*ForImageClassification`` and BERT / RoBERTa / DistilBERT
``*ForSequenceClassification`` (pure self-attention: Eq. 6 only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import rules

METHODS = ("chefer2021", "raw_attention", "rollout", "attn_gradcam", "attention_sum")
_NEEDS_GRAD = {"chefer2021", "attn_gradcam"}


def reference_classifier_row(
    model: torch.nn.Module,
    model_inputs: dict,
    target: int | None = None,
    method: str = "chefer2021",
    readout: int | str = 0,
    score_fn: Callable | None = None,
) -> torch.Tensor:
    """Readout row of R (float64, shape (n_tokens,)) for ONE sample.

    model_inputs: what you would pass to the model, batch of 1 (``pixel_values`` or
        ``input_ids`` [+ ``attention_mask``, which must be all ones: no padding]).
    target: class whose logit y_t is explained; None = argmax logit (SPEC 1.1).
    method: one of ``METHODS``.
    readout: token index (0 = [CLS]) or ``"mean"`` (mean over the rows of all tokens, for
        mean-pooling models). For an index readout the readout token's own entry is set to 0
        (SPEC 1.8); for ``"mean"`` nothing is zeroed.
    score_fn: optional override of the explained score for models without a classification logit
        (e.g. a mean-pooling sentence encoder): ``score_fn(outputs) -> scalar tensor`` is called on
        the model outputs and back-propagated instead of ``outputs.logits[0, target]``; ``target``
        is then ignored.

    The model is put in eval mode and eager attention for the call; its training flag, attention
    implementation and any existing parameter ``.grad`` are restored afterwards.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {METHODS}")
    for name, value in model_inputs.items():
        if torch.is_tensor(value):
            assert value.shape[0] == 1, f"{name}: one sample only (batch of 1)"
    mask = model_inputs.get("attention_mask")
    if mask is not None:
        assert bool((mask != 0).all()), "no padding: the reference explains one unpadded sample"

    was_training = model.training
    prev_impl = model.config._attn_implementation
    saved_grads = {p: p.grad for p in model.parameters()}
    model.eval()
    model.set_attn_implementation("eager")
    try:
        with torch.enable_grad():
            outputs = model(**model_inputs, output_attentions=True)
            attentions = list(outputs.attentions)
            assert len(attentions) > 0, "no attention maps returned (eager attention needed)"
            grads: list[torch.Tensor] | None = None
            if method in _NEEDS_GRAD:
                for A in attentions:
                    assert A.requires_grad, "attention maps carry no graph (frozen model?)"
                    A.retain_grad()
                if score_fn is not None:
                    score = score_fn(outputs)
                else:
                    logits = outputs.logits[0]
                    t = int(logits.argmax()) if target is None else int(target)
                    score = logits[t]
                model.zero_grad(set_to_none=True)
                score.backward()
                grads = [A.grad[0] for A in attentions]
    finally:
        for p, g in saved_grads.items():
            p.grad = g
        model.set_attn_implementation(prev_impl)
        model.train(was_training)

    A_per_layer = [A[0].detach().to(torch.float64) for A in attentions]  # (H, n, n) each
    n = A_per_layer[0].shape[-1]

    if method == "chefer2021":
        # Pure self-attention: one modality, one "self" event per layer (Eq. 5 then Eq. 6).
        events = []
        for layer, (A, dA) in enumerate(zip(A_per_layer, grads, strict=True)):
            abar = rules.grad_weighted(A, dA)
            events.append({"kind": "self", "query": "x", "key": "x", "block": layer, "abar": abar})
        R = rules.chefer_relevancy(events, {"x": n})[("x", "x")]
    elif method == "raw_attention":
        R = rules.raw_attention(A_per_layer[-1])
    elif method == "rollout":
        R = rules.rollout(A_per_layer)
    elif method == "attn_gradcam":
        R = rules.attn_gradcam(A_per_layer[-1], grads[-1])
    else:  # attention_sum
        R = rules.attention_sum(A_per_layer)

    if readout == "mean":
        return R.mean(dim=0)
    idx = int(readout)
    row = R[idx].clone()
    row[idx] = 0.0  # SPEC 1.8: the readout token's own entry is set to 0
    return row
