"""The data the relevancy methods consume: a stream of labelled attention events."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from attn_audit.models.engine.fused import LayerRecord, make_marker, marker_record
from attn_audit.models.engine.rules import gradient_weighted, head_mean, masked_mean


@dataclass
class AttentionEvent:
    """One attention layer as the model ran it, for the whole batch.

    Eager capture: `attn` is the post-softmax probability tensor (B, heads, n_query, n_key) and `grad`
    d(target score)/d(attn) of the same shape (None when no method needed gradients). Fused capture
    (models/engine/fused.py): `attn` is the layer's zero-stride marker and `record` holds the per-layer maps the
    methods asked for, each (B, n_query, n_key). Methods read either through the accessors below.
    Events that share `block` were computed by the model from the same input state (e.g. the
    two cross-attention directions of one LXMERT layer), so their relevancy updates are too.
    """

    kind: str  # "self" or "cross"
    query: str  # modality of the attending tokens
    key: str  # modality of the attended tokens
    block: int
    attn: torch.Tensor
    grad: torch.Tensor | None = None
    record: LayerRecord | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("self", "cross"):
            raise ValueError(f"attention event kind must be 'self' or 'cross', got {self.kind!r}")
        if self.kind == "self" and self.query != self.key:
            raise ValueError(f"a self-attention event has one modality, got {self.query!r}->{self.key!r}")
        if self.attn.dim() != 4:
            raise ValueError(f"attention must be (batch, heads, n_query, n_key), got {tuple(self.attn.shape)}")
        if self.record is None:
            self.record = marker_record(self.attn)

    @property
    def fused(self) -> bool:
        return self.record is not None

    def head_mean(self) -> torch.Tensor:
        """mean_h A: (B, q, k) float32."""
        return self._stat("mean") if self.fused else head_mean(self.attn)

    def gradient_weighted(self) -> torch.Tensor:
        """Eq. 5, mean_h (∇A ⊙ A)⁺: (B, q, k) float32."""
        return self._stat("gradient_weighted") if self.fused else gradient_weighted(self.attn, self.grad)

    def gradcam(self, valid: torch.Tensor) -> torch.Tensor:
        """Grad-CAM of the layer: mean_h w_h A_h, clamped at 0, with w_h the mean gradient over `valid` (B, q, k)
        pairs (the fused capture used the same masks, given to it after the forward)."""
        if self.fused:
            return self._stat("gradcam")
        weights = masked_mean(self.grad.float(), valid)  # (B, H)
        return (weights[:, :, None, None] * self.attn.float()).mean(1).clamp_min(0)

    def tensors(self) -> list[tuple[bool, torch.Tensor]]:
        """What this event holds, as (is a gradient, tensor with the batch first), for finiteness checks."""
        if self.fused:
            return [(name != "mean", t if t.dim() == 3 else t.transpose(0, 1))
                    for name, t in self.record.stats.items()]
        held = ((False, self.attn), (True, self.grad))
        return [(is_grad, t) for is_grad, t in held if t is not None and t.dim() == 4]

    def per_target(self, rows: torch.Tensor, slots: torch.Tensor) -> AttentionEvent:
        """Row t: sample rows[t]'s attention with the gradient of seed slot slots[t] (gradients per slot when the
        pass had several)."""
        if not self.fused:
            grad = None if self.grad is None else self.grad[slots, rows] if self.grad.dim() == 5 else self.grad[rows]
            return AttentionEvent(self.kind, self.query, self.key, self.block, self.attn[rows], grad)
        marker = make_marker((len(rows), *self.attn.shape[1:]))  # meta tensors take no device index
        return AttentionEvent(self.kind, self.query, self.key, self.block, marker,
                              record=self.record.per_target(rows, slots))

    def _stat(self, name: str) -> torch.Tensor:
        b, _, nq, nk = self.record.shape
        if name not in self.record.stats:  # a layer the gradient never reached (it depends on no input)
            return torch.zeros(b, nq, nk, device=self.record.device)
        return self.record.stats[name]

@dataclass
class Readout:
    """Which row of R is read out: `weights` (B, n_source) over the tokens of `source`.

    A [CLS] readout is a one-hot row, mean pooling is the padding mask divided by the token
    count. `self_index` (B,) marks the readout token, whose own entry is reported as 0
    (SPEC §1.8); None when the readout is not a single token. A `content` readout (a causal LM's position p − 1,
    which scores token p) is a real token, not a pooling one: its own entry is reported as R − I there.
    """

    source: str
    weights: torch.Tensor
    self_index: torch.Tensor | None = None
    content: bool = False

    @staticmethod
    def token(source: str, index: torch.Tensor | int, n_tokens: int, batch: int,
              device: torch.device | str | None = None) -> Readout:
        idx = torch.as_tensor(index, dtype=torch.long, device=device)
        if idx.dim() == 0:
            idx = idx.expand(batch)
        weights = torch.nn.functional.one_hot(idx, n_tokens).float()
        return Readout(source, weights, idx.clone())

    @staticmethod
    def mean(source: str, mask: torch.Tensor) -> Readout:
        m = mask.float()
        return Readout(source, m / m.sum(-1, keepdim=True).clamp_min(1.0))


@dataclass
class Capture:
    """Everything one forward (+ one backward) pass over a batch produced for the methods."""

    events: list[AttentionEvent]
    masks: dict[str, torch.Tensor]  # modality -> (B, n) bool, False on padding
    readouts: dict[str, Readout]  # reported modality -> row of R to read
    # Readout rows a fused capture propagated during its backward: "row:S" -> modality -> (B, n) (pure
    # self-attention, chefer2021 from layer S; models/engine/fused.py)
    propagated: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    # What the LRP family's passes computed (models/lrp), by need: "lrp:ours:float32" -> relprop's Relevance,
    # "attnlrp:float32" -> modality -> (B, n) token relevance
    lrp: dict[str, object] = field(default_factory=dict)

    def events_of(self, query: str, key: str) -> list[AttentionEvent]:
        return [e for e in self.events if e.query == query and e.key == key]
