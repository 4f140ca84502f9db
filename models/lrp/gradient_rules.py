"""The AttnLRP / CP-LRP rules as autograd functions: each has the forward value of the op it stands for and the
backward of the rule in gradient form (g = R / x, see modified_gradient.py), plus the two attention functions.

Each function keeps at most one tensor of its op's size for the backward (the identity rule's ratio y / x), or
a per-token scale (the norms), so a modified backward costs about what the plain one does.
"""

from __future__ import annotations

import torch


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the gradient by a constant."""

    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    return _ScaleGradient.apply(x, factor)


class _IdentityRule(torch.autograd.Function):
    """y = act(x) element-wise with R_x = R_y: in gradient form g_x = g_y · y / x (0 where x = 0)."""

    @staticmethod
    def forward(ctx, x, y):
        zero = x == 0
        ratio = torch.where(zero, torch.zeros_like(y), y / torch.where(zero, torch.ones_like(x), x))
        ctx.save_for_backward(ratio)
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        (ratio,) = ctx.saved_tensors
        return grad * ratio, None


def identity_rule(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`y` (= act(x), its value kept), back-propagating by the identity rule to `x`."""
    return _IdentityRule.apply(x, y.detach())


class _FrozenScaleNorm(torch.autograd.Function):
    """y = w ⊙ c(x) · s + b with the per-token scale s = 1/σ held constant; c centres (LayerNorm) or not (RMSNorm).
    The map is then linear in x, so its ε-rule is its gradient: g_x = c(w ⊙ g) · s."""

    @staticmethod
    def forward(ctx, x, y, inv_scale, weight, centred):
        ctx.save_for_backward(inv_scale, weight)
        ctx.centred = centred
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad):
        inv_scale, weight = ctx.saved_tensors
        g = grad.to(inv_scale.dtype)  # float32 at least: inv_scale is
        if weight is not None:
            g = g * weight.to(g.dtype)
        if ctx.centred:
            g = g - g.mean(-1, keepdim=True)
        return (g * inv_scale).to(grad.dtype), None, None, None, None


def frozen_scale_norm(x, y, inv_scale, weight, centred: bool) -> torch.Tensor:
    """`y` (the norm's output, value kept), back-propagating to `x` with the scale `inv_scale` (…, 1) constant."""
    return _FrozenScaleNorm.apply(x, y.detach(), inv_scale.detach(), None if weight is None else weight.detach(),
                                  centred)


def attnlrp_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa's output. Backward: the plain sdpa backward with dQ, dK × ¼ and dV × ½ — the uniform rule halves
    both operands of A·V and of Q·Kᵀ, and the softmax rule between them is its gradient (module docstring of
    modified_gradient.py)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, scale_gradient(query, 0.25), scale_gradient(key, 0.25),
                                  scale_gradient(value, 0.5), attention_mask, **kwargs)


def cp_lrp_attention(module, query, key, value, attention_mask, **kwargs):
    """sdpa's output with the attention probabilities constant (Q, K detached): O = A V is linear in V."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query.detach(), key.detach(), value, attention_mask, **kwargs)
