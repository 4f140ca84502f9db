"""The data the relevancy methods consume: a stream of labelled attention events."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionEvent:
    """One attention layer as the model ran it, for the whole batch.

    `attn` is the post-softmax probability tensor (B, heads, n_query, n_key); `grad` is
    d(target score)/d(attn) of the same shape, or None when no method needed gradients.
    Events that share `block` were computed by the model from the same input state (e.g. the
    two cross-attention directions of one LXMERT layer), so their relevancy updates are too.
    """

    kind: str  # "self" or "cross"
    query: str  # modality of the attending tokens
    key: str  # modality of the attended tokens
    block: int
    attn: torch.Tensor
    grad: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("self", "cross"):
            raise ValueError(f"attention event kind must be 'self' or 'cross', got {self.kind!r}")
        if self.kind == "self" and self.query != self.key:
            raise ValueError(f"a self-attention event has one modality, got {self.query!r}->{self.key!r}")
        if self.attn.dim() != 4:
            raise ValueError(f"attention must be (batch, heads, n_query, n_key), got {tuple(self.attn.shape)}")


@dataclass
class Readout:
    """Which row of R is read out: `weights` (B, n_source) over the tokens of `source`.

    A [CLS] readout is a one-hot row, mean pooling is the padding mask divided by the token
    count. `self_index` (B,) marks the readout token, whose own entry is reported as 0
    (SPEC §1.8); None when the readout is not a single token.
    """

    source: str
    weights: torch.Tensor
    self_index: torch.Tensor | None = None

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

    def events_of(self, query: str, key: str) -> list[AttentionEvent]:
        return [e for e in self.events if e.query == query and e.key == key]
