"""The fused attention function on hand-built tensors: its output, dQ / dK / dV and per-layer maps equal those
of eager attention (softmax(QKᵀ·s + mask) V under autograd), with padding masks, boolean masks, causal
masking and tiny chunks (every row its own chunk)."""

from __future__ import annotations

import pytest
import torch
from attn_audit.models.engine import fused
from attn_audit.models.engine.fused import LayerRecord, Recorder, _FusedAttention, _gradcam_head_weights

B, H, NQ, NK, D = 2, 3, 5, 5, 4


def eager(q, k, v, mask, scaling, causal):
    s = q @ k.transpose(-1, -2) * scaling
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    if causal:
        s = s.masked_fill(torch.ones(NQ, NK, dtype=torch.bool).triu(1), float("-inf"))
    a = s.softmax(-1)
    return a @ v, a


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, n, D, generator=g, dtype=torch.float64).float().requires_grad_() for n in (NQ, NK, NK)]


def padding_mask(kind: str):
    valid = torch.tensor([[True] * NK, [True, True, True, False, False]])  # sample 1: two padded keys
    if kind == "bool":
        return valid[:, None, None, :]
    if kind == "float":
        return torch.where(valid, 0.0, torch.finfo(torch.float32).min)[:, None, None, :]
    return None


@pytest.mark.parametrize("mask_kind,causal", [("none", False), ("bool", False), ("float", False), ("none", True)])
@pytest.mark.parametrize("chunk", [(1 << 24, 1 << 24), (1, 1)], ids=["one-chunk", "row-chunks"])
def test_output_gradients_and_maps_equal_eager_attention(mask_kind, causal, chunk, monkeypatch):
    monkeypatch.setattr(fused, "CHUNK_ELEMENTS", chunk)
    mask, scaling = padding_mask(mask_kind), 0.7
    q, k, v = inputs()
    dout = torch.randn(B, H, NQ, D, generator=torch.Generator().manual_seed(9))
    out_ref, a = eager(q, k, v, mask, scaling, causal)
    da, = torch.autograd.grad(out_ref, a, dout, retain_graph=True)
    grads_ref = torch.autograd.grad(out_ref, (q, k, v), dout)

    recorder = Recorder(frozenset({"mean", "gradient_weighted", "gradcam"}))
    record = LayerRecord((B, H, NQ, NK), recorder.wanted, True, q.device)
    record.query_valid = torch.ones(B, NQ, dtype=torch.bool)
    record.key_valid = torch.tensor([[True] * NK, [True, True, True, False, False]])
    out = _FusedAttention.apply(q, k, v, mask, scaling, causal, record, recorder)
    grads = torch.autograd.grad(out, (q, k, v), dout)

    torch.testing.assert_close(out, out_ref, atol=1e-6, rtol=1e-5)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(record.stats["mean"], a.mean(1), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(record.stats["gradient_weighted"], (a * da).clamp_min(0).mean(1), atol=1e-6, rtol=1e-5)
    valid = record.query_valid[:, :, None] & record.key_valid[:, None, :]
    weights = (da * valid[:, None]).sum((-2, -1)) / valid.sum((-2, -1))[:, None]
    torch.testing.assert_close(record.stats["gradcam"], (weights[:, :, None, None] * a).mean(1).clamp_min(0),
                               atol=1e-6, rtol=1e-5)


def test_gradcam_head_weights_are_the_masked_mean_of_the_attention_gradient():
    """mean over valid (q, k) of dO Vᵀ, computed as (Σ_q dO_q)·(Σ_k V_k) / count: by hand on one head."""
    dout = torch.tensor([[[[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]]]])  # (1, 1, 3, 2); the last query is padding
    v = torch.tensor([[[[1.0, 1.0], [3.0, -1.0]]]])  # (1, 1, 2, 2)
    record = LayerRecord((1, 1, 3, 2), frozenset(), True, torch.device("cpu"))
    record.query_valid = torch.tensor([[True, True, False]])
    record.key_valid = torch.tensor([[True, True]])
    # dA = [[1, 3], [2, -2]] on the valid rows: mean (1 + 3 + 2 - 2) / 4 = 1
    assert _gradcam_head_weights(dout, v, record).tolist() == [[1.0]]


def test_markers_stand_for_their_records_only_during_the_capture():
    recorder = Recorder(frozenset({"mean"}))
    record = LayerRecord((B, H, NQ, NK), recorder.wanted, False, torch.device("cpu"))
    marker = recorder.add(record)
    assert marker.shape == (B, H, NQ, NK) and marker.device.type == "meta"  # A's shape, no memory
    assert fused.marker_record(marker) is None  # no capture running
    token = fused._ACTIVE.set(recorder)
    try:
        assert fused.marker_record(marker) is record
        assert fused.marker_record(torch.zeros(B, H, NQ, NK)) is None  # a real attention tensor
    finally:
        fused._ACTIVE.reset(token)
