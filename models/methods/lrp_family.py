"""What the LRP-family methods share (SPEC_LRP): the precision of their relevance pass, the conservation note, the
families they run on, and how their needs name the pass.

Needs: "lrp:RULES:DTYPE" — the Chefer-style reverse pass (models/lrp/relprop.py) with rule set "ours" (Transformer
Attribution) or "lrp" (the LRP / partial LRP baselines) over an eager pass that records the stock modules' tensors;
"attention_gradient" — that pass's per-head ∂y/∂A; "attnlrp:DTYPE" / "cp_lrp:DTYPE" — a pass of its own under the
modified-gradient rules (models/lrp/modified_gradient.py).
"""

from __future__ import annotations

import torch
from attn_audit.models.engine.events import Capture
from attn_audit.models.methods.registry import Method, Param

DTYPE = Param(str, "float32", "precision of the relevance pass (float64: a check on ill-conditioned float32 LRP)",
              ("float32", "float64"))
TOLERANCE = Param(float, 0.05, "a map whose relevance misses what the rule conserves by more than this share "
                               "gets a note")
# The recorded reverse pass knows these families' module layouts (models/lrp/record.py)
RECORDED_FAMILIES = frozenset({"vit", "bert", "clip"})
# The modified-gradient rules need attention through transformers' interface and the hidden states of a layer stack
# (one stack per modality: a VLM's image relevance would have to cross the language model's first block, where the
# pass reads the text's)
GRADIENT_FAMILIES = frozenset({"vit", "bert", "mean-pool", "clip", "causal-lm"})


class LRPMethod(Method):
    """A method of the LRP family: `need` names its pass (with the configured dtype)."""

    kind: str  # "lrp:ours", "lrp:lrp", "attnlrp", "cp_lrp"

    @property
    def need(self) -> str:
        return f"{self.kind}:{self.config['dtype']}"

    def needs_for(self, rows_in_backward):
        return frozenset({self.need} | (self.needs - {self.kind}))

    def conservation_notes(self, gap: torch.Tensor, what: str) -> dict[int, str]:
        """Rows whose relative gap exceeds the tolerance, with a note that says what to do."""
        tolerance = self.config["tolerance"]
        return {int(i): f"{self.name}: relevance misses {what} by {float(gap[i]):.1%} (tolerance {tolerance:.0%}); "
                        f"rerun with {self.name}:dtype=float64 to check float32 conditioning"
                for i in torch.nonzero(gap > tolerance).flatten().tolist()}


def row_through(readout_weights: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
    """v Π_b (I + Ā_b), top layer first (v ← v + v Ā_b): the readout row of an unnormalised rollout."""
    v = readout_weights.to(maps[0].dtype) if maps else readout_weights
    for a in reversed(maps):
        v = v + (v.unsqueeze(1) @ a).squeeze(1)
    return v


def stream_mask(capture: Capture, modality: str, amap: torch.Tensor) -> torch.Tensor:
    """(B, n, n) with padding queries and keys zeroed."""
    mask = capture.masks[modality].to(amap.dtype)
    return amap * mask[:, :, None] * mask[:, None, :]
