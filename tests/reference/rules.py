"""Per-sample relevancy rules of Chefer, Gur & Wolf (ICCV 2021) and the SPEC section 2 baselines.

Everything here works on ONE sample: plain float64 tensors, explicit Python loops over layers and
events, full R matrices (no row-vector shortcut, no batching). Clarity over speed.

Shapes: A, dA are (H, n_queries, n_keys) for one attention layer of one sample (after softmax).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def _f64(x: Tensor) -> Tensor:
    return x.detach().to(torch.float64)


# --------------------------------------------------------------------------------------------------
# Elementary operations
# --------------------------------------------------------------------------------------------------


def grad_weighted(A: Tensor, dA: Tensor) -> Tensor:
    """Eq. 5: Ā = mean_h( (dA ⊙ A)^+ ). The clamp at 0 comes BEFORE the mean over heads."""
    assert A.dim() == 3 and A.shape == dA.shape, (A.shape, dA.shape)
    return (_f64(dA) * _f64(A)).clamp(min=0).mean(dim=0)


def rownorm(X: Tensor) -> Tensor:
    """Divide each row by its sum; a row summing to 0 stays 0 (never NaN)."""
    X = _f64(X)
    out = torch.zeros_like(X)
    for i in range(X.shape[0]):
        s = X[i].sum()
        if s != 0:
            out[i] = X[i] / s
    return out


def residual_normalize(R: Tensor) -> Tensor:
    """Eqs. 8-9: R̄ = rownorm(R - I) + I (used only inside Eq. 10)."""
    R = _f64(R)
    eye = torch.eye(R.shape[0], dtype=torch.float64)
    return rownorm(R - eye) + eye


# --------------------------------------------------------------------------------------------------
# chefer2021 (SPEC section 1)
# --------------------------------------------------------------------------------------------------


def _event_deltas(R: dict, ev: dict) -> dict:
    """Additions one attention event makes, all read from the state ``R`` (not modified here)."""
    s, q, abar = ev["query"], ev["key"], _f64(ev["abar"])
    deltas: dict = {}
    if ev["kind"] == "self":
        assert s == q, "a self-attention event has query modality == key modality"
        # Eq. 6 (q == s) and Eq. 7 (q != s): R^{sq} += Ā R^{sq} for every modality q.
        for (row, col), R_rc in R.items():
            if row == s:
                deltas[(row, col)] = abar @ R_rc
    elif ev["kind"] == "cross":
        assert s != q, "a cross-attention event has query modality != key modality"
        # Eq. 10: R^{sq} += (R̄^{ss})ᵀ Ā R̄^{qq}
        deltas[(s, q)] = residual_normalize(R[(s, s)]).T @ abar @ residual_normalize(R[(q, q)])
        # Eq. 11: R^{ss} += Ā R^{qs}  (adds 0 while R^{qs} = 0, e.g. encoder never attends decoder)
        deltas[(s, s)] = abar @ R[(q, s)]
    else:
        raise ValueError(f"unknown event kind {ev['kind']!r}")
    return deltas


def chefer_relevancy(events: Sequence[dict], sizes: dict) -> dict:
    """Full relevancy matrices R[(s, q)] (n_s x n_q) for one sample.

    ``sizes``: modality -> number of tokens. ``events``: in model order, each
    ``{"kind": "self"|"cross", "query": s, "key": q, "block": int, "abar": Tensor(n_s, n_q)}``
    where ``abar`` is already Ā (Eq. 5, see :func:`grad_weighted`).

    Consecutive events with the same ``block`` value form one parallel block: all of them are
    computed from the state before the block, then their additions are summed in (SPEC 1.6).
    A ``block`` of None never groups with anything.
    """
    # Initialisation (SPEC 1.3): R^{mm} = I, R^{mn} = 0.
    R = {}
    for m, n_m in sizes.items():
        for k, n_k in sizes.items():
            if m == k:
                R[(m, k)] = torch.eye(n_m, dtype=torch.float64)
            else:
                R[(m, k)] = torch.zeros(n_m, n_k, dtype=torch.float64)

    # Group consecutive events by block.
    groups: list[list[dict]] = []
    for ev in events:
        if groups and ev.get("block") is not None and groups[-1][-1].get("block") == ev.get("block"):
            groups[-1].append(ev)
        else:
            groups.append([ev])

    for group in groups:
        before = {key: val.clone() for key, val in R.items()}  # state before the block
        for ev in group:
            s, q = ev["query"], ev["key"]
            assert tuple(ev["abar"].shape) == (sizes[s], sizes[q]), (ev["abar"].shape, sizes[s], sizes[q])
            for key, delta in _event_deltas(before, ev).items():
                R[key] = R[key] + delta
    return R


# --------------------------------------------------------------------------------------------------
# Baselines (SPEC section 2), one sample; each returns a full (n_queries, n_keys) matrix
# --------------------------------------------------------------------------------------------------


def raw_attention(A_last: Tensor) -> Tensor:
    """Last layer's attention, mean over heads."""
    return _f64(A_last).mean(dim=0)


def rollout(attns: Sequence[Tensor]) -> Tensor:
    """Abnar & Zuidema 2020: Â_l = rownorm(mean_h A_l + I); R = Â_L ⋯ Â_1 (pure self-attention)."""
    n = attns[0].shape[-1]
    eye = torch.eye(n, dtype=torch.float64)
    R = eye.clone()
    for A in attns:  # layer 1 first; each new layer multiplies from the left
        A_hat = rownorm(_f64(A).mean(dim=0) + eye)
        R = A_hat @ R
    return R


def attn_gradcam(A_last: Tensor, dA_last: Tensor) -> Tensor:
    """Grad-CAM on the last attention layer: w_h = mean of dA_h over the whole map;
    result = mean_h(w_h · A_h), clamped at 0 (after the mean)."""
    A, dA = _f64(A_last), _f64(dA_last)
    H = A.shape[0]
    acc = torch.zeros_like(A[0])
    for h in range(H):
        w_h = dA[h].mean()
        acc = acc + w_h * A[h]
    return (acc / H).clamp(min=0)


def attention_sum(attns: Sequence[Tensor]) -> Tensor:
    """Sum of A over all layers and heads, each row normalised to sum to 1."""
    total = torch.zeros_like(_f64(attns[0][0]))
    for A in attns:
        for h in range(A.shape[0]):
            total = total + _f64(A[h])
    return rownorm(total)
