"""Adapters whose samples have many targets (detections, generated tokens), chosen by the model itself.

The adapter runs the model once, then `select_targets` lists every (sample, target) pair: the score to
explain (an entry of the sample's flattened score table) and the row of R to read. The capture explains all
of them from that one forward pass (models/run_capture.py), as it explains a classifier's one target per sample.
"""

from __future__ import annotations

import torch
from attn_audit.models.adapters.base import Adapter
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.batch import Batch
from attn_audit.models.engine.events import Capture


class MultiTargetAdapter(Adapter):
    """`run` returns the (B, ...) score table; `select_targets` picks the pairs to explain from it."""

    predicts_class = False

    def select_targets(self, batch: Batch, logits: torch.Tensor, capture: Capture,
                       requested: torch.Tensor | None = None) -> Targets:
        assert requested is None, "models with many targets choose their own (models.explain refuses a target)"
        return self.own_targets(batch, logits)

    def own_targets(self, batch: Batch, logits: torch.Tensor) -> Targets:
        """Every (sample, target) pair the model's own output names, sample-major."""
        raise NotImplementedError

