"""The layer rules of Chefer-style LRP (SPEC_LRP L1-L2) as pure tensor functions.

Each maps the relevance R at an op's output to the relevance at its input(s), from the op's recorded inputs.
Biases never enter (L1). Everything is batched over a leading sample dimension and per sample: no rule mixes
the samples of a batch (the official Add sums "over the whole tensor" only because it runs at batch size 1).
Two rule sets differ in the Linear and the Add: "ours" (layers_ours.py, Transformer Attribution) and "lrp"
(layers_lrp.py, the LRP / partial-LRP baselines).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

EPS = 1e-9


def safe_divide(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a ⊘ b = a / (b + 1e-9), and 0 where b == 0 exactly (L1). The shift ignores b's sign; b = -1e-9 would make
    the denominator 0, where the official code uses +1e-9 instead."""
    den = b + EPS
    den = torch.where(den == 0, torch.full_like(den, EPS), den)
    return torch.where(b == 0, torch.zeros((), dtype=a.dtype, device=a.device), a / den)


def _signed(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return t.clamp(min=0), t.clamp(max=0)


def linear_ours(x: torch.Tensor, weight: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """z⁺-type rule with one denominator per output unit (L2.2, α=1 β=0): conserves ΣR.

    x (..., in), weight (out, in), R (..., out) -> (..., in)."""
    (xp, xn), (wp, wn) = _signed(x), _signed(weight)
    s = safe_divide(R, F.linear(xp, wp) + F.linear(xn, wn))
    return xp * (s @ wp) + xn * (s @ wn)


def linear_lrp(x: torch.Tensor, weight: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Separate denominators for the positive and the negative part (L2.3): each part carries the whole R, so the
    input total is about twice ΣR. Reproduced as the official code has it."""
    (xp, xn), (wp, wn) = _signed(x), _signed(weight)
    return xp * (safe_divide(R, F.linear(xp, wp)) @ wp) + xn * (safe_divide(R, F.linear(xn, wn)) @ wn)


def add_lrp(x1: torch.Tensor, x2: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain gradient-times-input split of Z = x1 + x2 (L2.3). A broadcast operand (a position embedding of batch
    1) gets one relevance per sample, R's shape: nothing is summed over the batch."""
    s = safe_divide(R, x1 + x2)
    return x1 * s, x2 * s


def _sample_sum(t: torch.Tensor) -> torch.Tensor:
    """Σ over every dimension but the first, kept for broadcasting."""
    return t.sum(dim=tuple(range(1, t.dim())), keepdim=True)


def add_ours(x1: torch.Tensor, x2: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GI split, then each operand's map rescaled so that the two totals are T·|A|/(|A|+|B|) and T·|B|/(|A|+|B|)
    of the sample's total T (L2.2), per sample. The factor is negative when a branch total has the opposite sign
    of T: that branch's signs flip, as in the official code."""
    a, b = add_lrp(x1, x2, R)
    A, B, T = _sample_sum(a), _sample_sum(b), _sample_sum(R)
    share = A.abs() + B.abs()
    a = a * safe_divide(T * safe_divide(A.abs(), share), A)
    b = b * safe_divide(T * safe_divide(B.abs(), share), B)
    return a, b


def clone(x: torch.Tensor, R_total: torch.Tensor) -> torch.Tensor:
    """Fan-out of x into branches whose relevances sum to R_total: x ⊙ (ΣR_k ⊘ x), i.e. ΣR_k zeroed where x = 0."""
    return x * safe_divide(R_total, x)


def qk_split(q: torch.Tensor, k: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GI split of the unscaled scores Z = q kᵀ ('bhid,bhjd->bhij'); q (..., n, d), k (..., m, d), R (..., n, m).
    Each operand gets about the whole ΣR (the attention halves them)."""
    S = safe_divide(R, q @ k.transpose(-1, -2))
    return q * (S @ k), k * (S.transpose(-1, -2) @ q)


def av_split(A: torch.Tensor, v: torch.Tensor, R: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """GI split of Z = A v ('bhij,bhjd->bhid'); A (..., n, m), v (..., m, d), R (..., n, d) -> (R_A, R_v)."""
    S = safe_divide(R, A @ v)
    return A * (S @ v.transpose(-1, -2)), v * (A.transpose(-1, -2) @ S)


def patch_conv_zb(x: torch.Tensor, weight: torch.Tensor, R: torch.Tensor, stride, padding) -> torch.Tensor:
    """z^B rule of a 3-channel Conv2d (the patch embedding), bounds = each image's own min and max over channels and
    pixels (L2.1). x (B, C, H, W), weight (D, C, kh, kw), R (B, D, h, w) -> (B, C, H, W).

    Every numerator term is ≥ 0 because l ≤ x ≤ h, so the denominator is ≥ 1e-9 and a plain division is used;
    for R ≥ 0 the result is ≥ 0 and sums to ΣR up to the 1e-9."""
    wp, wn = _signed(weight)
    low = x.amin(dim=(1, 2, 3), keepdim=True).expand_as(x)
    high = x.amax(dim=(1, 2, 3), keepdim=True).expand_as(x)

    def conv(t, w):
        return F.conv2d(t, w, stride=stride, padding=padding)

    def back(S, w):  # convᵀ: the gradient of ⟨conv(t, w), S⟩ with respect to t
        return torch.nn.grad.conv2d_input(x.shape, w, S, stride=stride, padding=padding)

    S = R / (conv(x, weight) - conv(low, wp) - conv(high, wn) + EPS)
    return x * back(S, weight) - low * back(S, wp) - high * back(S, wn)


def scatter_token(picked: torch.Tensor, token: torch.Tensor, n: int, R: torch.Tensor) -> torch.Tensor:
    """IndexSelect (pooling one token per sample): the relevance R (B, D) of the picked states (B, D) goes back to
    token `token` (B,) of an (B, n, D) sequence as picked ⊙ (R ⊘ picked); every other token gets 0."""
    out = R.new_zeros(R.shape[0], n, R.shape[-1])
    out[torch.arange(R.shape[0], device=R.device), token] = picked * safe_divide(R, picked)
    return out


@dataclass(frozen=True)
class RuleSet:
    linear: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    add: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


RULE_SETS = {"ours": RuleSet(linear_ours, add_ours), "lrp": RuleSet(linear_lrp, add_lrp)}
