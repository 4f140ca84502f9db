"""chefer2021 for ONE token of ONE prompt of a stock decoder-only language model, as SPEC §1.10 states it.

Its own forward pass over the tokens before the explained one (a lone, unpadded sequence), eager attention,
`.retain_grad()` on every returned attention map and one `backward()` on that token's logit at the position before
it, then the float64 full-matrix rules of rules.py (Eq. 5, Eq. 6) with an explicit loop over layers. The readout is
row p − 1 of R, its own entry reported as (R − I) there. Does not use models/engine.
"""

from __future__ import annotations

import torch

from . import rules


def token_backward(model: torch.nn.Module, inputs: dict, p: int, token: int, retained=lambda out: out.attentions):
    """An eager forward of one unpadded sample with `.retain_grad()` on the attention maps `retained(out)` names,
    then one `backward()` of `token`'s logit at position p − 1; the model's own gradients and attention
    implementation are left as they were. Returns (the forward's output, the logits at p − 1)."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    saved = {q: q.grad for q in model.parameters()}
    try:
        with torch.enable_grad():
            out = model(**inputs, output_attentions=True)
            for a in retained(out):
                a.retain_grad()
            logits = out.logits[0, p - 1]
            model.zero_grad(set_to_none=True)
            logits[token].backward()
    finally:
        for q, g in saved.items():
            q.grad = g
        model.set_attn_implementation(previous)
    return out, logits


def self_relevancy(attentions, n: int) -> torch.Tensor:
    """R (n × n, float64) of one self-attention stream by Eqs. 5–6, from its maps and their retained gradients."""
    events = [{"kind": "self", "query": "s", "key": "s", "block": layer,
               "abar": rules.grad_weighted(a[0], torch.zeros_like(a[0]) if a.grad is None else a.grad[0])}
              for layer, a in enumerate(attentions)]
    return rules.chefer_relevancy(events, {"s": n})[("s", "s")]


def reference_token(model: torch.nn.Module, ids: list[int], p: int) -> tuple[torch.Tensor, float, float]:
    """(row over positions 0 … p − 1 (float64), logit, log probability) for token `ids[p]` given `ids[:p]`."""
    assert 0 < p < len(ids)
    out, logits = token_backward(model, {"input_ids": torch.tensor([ids[:p]])}, p, ids[p])
    R = self_relevancy(out.attentions, p)
    row = (R - torch.eye(p, dtype=torch.float64))[p - 1]  # differs from R's row only at the readout's own entry
    logprob = torch.log_softmax(logits.detach().double(), -1)[ids[p]]
    return row, float(logits[ids[p]].detach()), float(logprob)
