"""Elementary rules of SPEC §1 on batched tensors, always accumulated in float32."""

from __future__ import annotations

import torch


def head_mean(attn: torch.Tensor) -> torch.Tensor:
    """mean over heads: (B, H, q, k) -> (B, q, k) float32."""
    return attn.float().mean(1)


def gradient_weighted(attn: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Eq. 5: Ā = mean_h((∇A ⊙ A)^+), negatives clamped before the head mean."""
    return (grad.float() * attn.float()).clamp_min_(0).mean(1)


def mask_pairs(a: torch.Tensor, query_mask: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
    """Zero the rows of padding queries and the columns of padding keys (SPEC §1.9)."""
    return a * (query_mask[:, :, None] & key_mask[:, None, :]).to(a.dtype)


def rownorm(x: torch.Tensor) -> torch.Tensor:
    """Divide each row by its sum; a zero row stays zero instead of becoming NaN."""
    total = x.sum(-1, keepdim=True)
    return torch.where(total != 0, x / torch.where(total != 0, total, torch.ones_like(total)), 0.0)


def eye_like(r: torch.Tensor) -> torch.Tensor:
    """Identity broadcastable against a batch of square matrices."""
    return torch.eye(r.shape[-1], dtype=r.dtype, device=r.device)


def residual_normalize(r: torch.Tensor) -> torch.Tensor:
    """Eqs. 8–9: R̄ = rownorm(R − I) + I, the self-relevancy without its residual part."""
    eye = eye_like(r)
    return rownorm(r - eye) + eye


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, H, q, k) over the valid (q, k) entries of each sample: (B, H)."""
    m = mask[:, None].to(x.dtype)
    return (x * m).sum((-2, -1)) / m.sum((-2, -1)).clamp_min(1.0)
