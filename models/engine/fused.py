"""Memory-light attention capture through transformers' attention interface (`capture="fused"`).

Eager attention keeps every layer's (B, heads, n, n) probabilities A in the autograd graph, and the methods then
ask for ∂y/∂A of the same size. Here an attention function of our own (registered with
`transformers.AttentionInterface` and selected with `set_attn_implementation` only while a capture runs) computes
the output with PyTorch's scaled_dot_product_attention — no A in the graph — and keeps only what the requested
methods need from each layer, each at most (B, n_query, n_key):

- in the forward, `mean`: mean_h A (rollout, raw attention, attention sum), from A recomputed in query-row chunks;
- in the backward, when dO = ∂y/∂O arrives: `gradient_weighted`: mean_h (A ⊙ ∂y/∂A)⁺ (chefer2021), with
  ∂y/∂A = dO Vᵀ exactly (O = A V), and `gradcam`: mean_h w_h A_h with w_h the mean of ∂y/∂A over the valid
  query × key pairs, which is bilinear: (Σ_valid q dO_q) · (Σ_valid k V_k) / count — no (n × n) gradient is formed.

For pure self-attention models the chefer2021 readout row needs no map at all: `row:S` propagates v ← v + v Ā
through the layers from S on while the backward runs (top layer first, as the product needs), query-row chunk by
chunk, so a layer's Ā is never formed whole and nothing (n × n) is kept.

The backward computes dQ, dK, dV itself from the same chunks (the standard softmax-attention backward), so A is
recomputed once per layer and pass. The attention function returns, in place of A, a zero-stride *marker*
tensor of A's shape: the model collects it in `outputs.attentions` as it would A, so the adapters build their
events unchanged, and `AttentionEvent` finds the layer's record through the marker.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from attn_audit.models.engine.attention_registry import attention_function
from attn_audit.models.errors import AttnAuditError

ATTENTION_NAME = "attn_audit_fused"
# (B × heads × rows × n_key) floats recomputed at once: about twice the layer's Q, so the chunks' temporaries grow
# with the activations the pass keeps anyway; bounded below (small chunks cost Python and small matmuls: 1.5x
# slower at 2^18 than 2^22 on BERT-base seq 512, batch 4, CPU) and above.
CHUNK_ELEMENTS = (1 << 18, 1 << 22)
FORWARD_STATS = ("mean",)
BACKWARD_STATS = ("gradient_weighted", "gradcam")


@dataclass(eq=False)
class LayerRecord:
    """One attention call of a capture pass: what its methods need, computed as the pass runs."""

    shape: tuple[int, int, int, int]  # (B, heads, n_query, n_key)
    wanted: frozenset[str]
    requires_grad: bool
    device: torch.device
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (B, n_q, n_k) or (slots, B, n_q, n_k)
    # Set by the driver after the forward: the valid query / key tokens (gradcam's head weights) and, for
    # many-target passes, which seed vector the running backward is (its stats go to that slot).
    query_valid: torch.Tensor | None = None
    key_valid: torch.Tensor | None = None
    # Pure self-attention readouts: the stream (modality) this layer belongs to, its index and the stream's depth.
    stream: str | None = None
    layer: int = 0
    layers: int = 0


    def per_target(self, rows: torch.Tensor, slots: torch.Tensor) -> LayerRecord:
        """The record with one row per target: its sample's forward statistics, its own slot's gradient ones."""
        stats = {name: value[slots, rows] if value.dim() == 4 else value[rows] for name, value in self.stats.items()}
        return LayerRecord((len(rows), *self.shape[1:]), self.wanted, self.requires_grad, self.device, stats)


def make_marker(shape) -> torch.Tensor:
    """A zero-stride tensor of A's shape on the meta device: it stands for a layer's attention, holding nothing."""
    return torch.zeros((), device="meta").expand(*shape)


class Recorder:
    """The records of one capture pass, found again by their markers."""

    def __init__(self, wanted: frozenset[str]):
        self.wanted = wanted
        self.slots = 0  # > 0: the backward runs once per seed slot (many targets per sample; set by that driver)
        self.slot = 0
        # "row:S" -> stream -> (B, n) readout row, propagated through the layers from S on during the backward
        self.rows: dict[str, dict[str, torch.Tensor]] = {}
        self._by_marker: dict[int, tuple[torch.Tensor, LayerRecord]] = {}

    def add(self, record: LayerRecord) -> torch.Tensor:
        marker = make_marker(record.shape)
        self._by_marker[id(marker)] = (marker, record)  # the marker is kept alive: its id stays unique
        return marker

    def record_of(self, tensor: torch.Tensor) -> LayerRecord | None:
        found = self._by_marker.get(id(tensor))
        return found[1] if found is not None and found[0] is tensor else None

    def store(self, record: LayerRecord, name: str, rows: slice, value: torch.Tensor) -> None:
        """Write rows of a statistic (allocated on first use; per slot in many-target passes)."""
        b, _, nq, nk = record.shape
        if name not in record.stats:
            shape = (self.slots, b, nq, nk) if self.slots and name in BACKWARD_STATS else (b, nq, nk)
            record.stats[name] = value.new_zeros(shape)
        target = record.stats[name][self.slot] if self.slots and name in BACKWARD_STATS else record.stats[name]
        target[:, rows] = value


_ACTIVE: ContextVar[Recorder | None] = ContextVar("attn_audit_fused_recorder", default=None)


def marker_record(tensor: torch.Tensor) -> LayerRecord | None:
    """The record behind a marker of the running capture (None for a real attention tensor)."""
    recorder = _ACTIVE.get()
    return recorder.record_of(tensor) if recorder is not None and tensor.device.type == "meta" else None


def _chunks(b: int, h: int, nq: int, nk: int, d: int):
    low, high = CHUNK_ELEMENTS
    step = max(1, min(max(2 * b * h * nq * d, low), high) // max(1, b * h * nk))
    return [slice(lo, min(lo + step, nq)) for lo in range(0, nq, step)]


def _scores(q_scaled: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, causal: bool,
            rows: slice) -> torch.Tensor:
    """Pre-softmax scores of query rows `rows` (q already scaled, float32), with the mask as sdpa applies it."""
    s = q_scaled[:, :, rows] @ k.transpose(-1, -2)
    if mask is not None:
        m = mask[..., rows, :] if mask.shape[-2] > 1 else mask
        s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m.float()
    if causal:  # sdpa's is_causal: top-left aligned (keys beyond the queries are cropped before)
        qi = torch.arange(rows.start, rows.stop, device=s.device)[:, None]
        s = s.masked_fill(qi < torch.arange(k.shape[2], device=s.device)[None, :], float("-inf"))
    return s


class _FusedAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, mask, scaling, causal, record, recorder):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scaling, is_causal=causal)
        if "mean" in record.wanted:
            b, h, nq, nk = record.shape
            with torch.autocast(q.device.type, enabled=False):  # the statistics are float32 under autocast too
                q_scaled, k32 = q.float() * scaling, k.float()
                for rows in _chunks(b, h, nq, nk, q.shape[-1]):
                    a = _scores(q_scaled, k32, mask, causal, rows).softmax(-1)
                    recorder.store(record, "mean", rows, a.mean(1))
        ctx.save_for_backward(q, k, v, mask)
        ctx.scaling, ctx.causal, ctx.record, ctx.recorder = scaling, causal, record, recorder
        return out

    @staticmethod
    def backward(ctx, dout):
        with torch.autocast(dout.device.type, enabled=False):
            return _FusedAttention._backward(ctx, dout)

    @staticmethod
    def _backward(ctx, dout):
        q, k, v, mask = ctx.saved_tensors
        record, recorder, scaling = ctx.record, ctx.recorder, ctx.scaling
        b, h, nq, nk = record.shape
        dout32, v32, k32, q_scaled = dout.float(), v.float(), k.float(), q.float() * scaling
        dq = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        dk = torch.zeros(k.shape, dtype=torch.float32, device=k.device)
        dv = torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        head_weights = _gradcam_head_weights(dout32, v32, record) if "gradcam" in record.wanted else None
        rows_in = _propagating(recorder, record)  # readout rows this layer updates: v ← v + v Ā
        updates = {name: torch.zeros_like(v_row) for name, v_row in rows_in.items()}
        for rows in _chunks(b, h, nq, nk, q.shape[-1]):
            a = _scores(q_scaled, k32, mask, ctx.causal, rows).softmax(-1)
            d_out = dout32[:, :, rows]
            da = d_out @ v32.transpose(-1, -2)  # ∂y/∂A of these rows
            p = da.mul_(a)  # A ⊙ ∂y/∂A, in place: ∂y/∂A itself is not needed again
            if "gradient_weighted" in record.wanted or rows_in:
                abar = p.clamp_min(0).mean(1)
                if "gradient_weighted" in record.wanted:
                    recorder.store(record, "gradient_weighted", rows, abar)
                for name, v_row in rows_in.items():
                    weights = v_row[:, rows] * record.query_valid[:, rows]  # padding queries contribute nothing
                    updates[name] += (weights.unsqueeze(1) @ abar).squeeze(1)
            if head_weights is not None:
                recorder.store(record, "gradcam", rows, (head_weights[:, :, None, None] * a).mean(1).clamp_min(0))
            dv += a.transpose(-1, -2) @ d_out
            delta = p.sum(-1, keepdim=True)  # rowsum(A ⊙ ∂y/∂A), exact for the recomputed A (= dO·O in exact maths)
            ds = p.sub_(a.mul_(delta))  # A ⊙ (∂y/∂A − rowsum(A ⊙ ∂y/∂A)): ∂y/∂S; A is not needed again
            dq[:, :, rows] = (ds @ k32) * scaling
            dk += ds.transpose(-1, -2) @ q_scaled[:, :, rows]
        for name, v_row in rows_in.items():  # padding keys receive nothing
            recorder.rows[name][record.stream] = v_row + updates[name] * record.key_valid
        return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype), None, None, None, None, None


def _propagating(recorder: Recorder, record: LayerRecord) -> dict[str, torch.Tensor]:
    """{"row:S": the stream's current row} for the row propagations this layer takes part in (layers ≥ S)."""
    out = {}
    for name, streams in recorder.rows.items():
        start = int(name.split(":", 1)[1])
        first = start if start >= 0 else record.layers + start
        if record.stream in streams and record.layer >= first:
            out[name] = streams[record.stream].float()
    return out


def _gradcam_head_weights(dout: torch.Tensor, v: torch.Tensor, record: LayerRecord) -> torch.Tensor:
    """(B, H): the mean of ∂y/∂A = dO Vᵀ over valid (query, key) pairs, as (Σ_valid q dO_q)·(Σ_valid k V_k) / n."""
    b, _, nq, nk = record.shape
    qv = record.query_valid.float() if record.query_valid is not None else dout.new_ones(b, nq)
    kv = record.key_valid.float() if record.key_valid is not None else dout.new_ones(b, nk)
    summed_out = torch.einsum("bhqd,bq->bhd", dout, qv)
    summed_v = torch.einsum("bhkd,bk->bhd", v, kv)
    count = (qv.sum(-1) * kv.sum(-1)).clamp_min(1.0)
    return (summed_out * summed_v).sum(-1) / count[:, None]


def fused_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None,
                    is_causal: bool | None = None, position_bias=None, **kwargs):
    """The attention function transformers calls while a fused capture runs: sdpa's output and a marker."""
    from transformers.integrations.sdpa_attention import (
        create_position_bias_mask,
        repeat_kv,
        sdpa_attention_forward,
    )

    recorder = _ACTIVE.get()
    unsupported = [k for k in ("softcap", "sliding_window", "s_aux") if kwargs.get(k) is not None]
    if recorder is not None and unsupported:
        raise AttnAuditError(f"{type(module).__name__} uses {', '.join(unsupported)}, which the fused capture does "
                             "not model; load it with capture='eager'")
    if recorder is None or (module.training and dropout > 0):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_bias=position_bias, **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    if groups > 1:  # as sdpa's fallback does: the per-head maps are what the methods read
        key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    nq = query.shape[2]
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(nq > 1 and attention_mask is None and causal)
    if causal and key.shape[2] > nq:  # sdpa_attention_forward crops the keys here too
        key, value = key[:, :, :nq], value[:, :, :nq]
        position_bias = None if position_bias is None else position_bias[..., :nq]
    nk = key.shape[2]
    if position_bias is not None:
        attention_mask = create_position_bias_mask(position_bias, attention_mask, causal, query, key)
        causal = False
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    b = max(query.shape[0], key.shape[0])
    record = LayerRecord((b, query.shape[1], nq, nk), recorder.wanted,
                         torch.is_grad_enabled() and (query.requires_grad or key.requires_grad or value.requires_grad),
                         query.device)
    out = _FusedAttention.apply(query, key, value, attention_mask, scaling, causal, record, recorder)
    return out.transpose(1, 2).contiguous(), recorder.add(record)


@contextmanager
def fused_capture(model: torch.nn.Module, wanted: frozenset[str]):
    """Run `model`'s attention through `fused_attention` inside; the model's implementation and the global
    registration are restored on exit. Yields the Recorder."""
    recorder = Recorder(frozenset(wanted))
    token = _ACTIVE.set(recorder)
    try:
        with attention_function(model, ATTENTION_NAME, fused_attention):
            yield recorder
    finally:
        _ACTIVE.reset(token)
