"""Adapters whose samples have many targets (detections, generated tokens), chosen by the model itself.

The adapter runs the model once, then `select_targets` lists every (sample, target) pair: the score to
explain (an entry of the sample's flattened score table) and the row of R to read. The capture explains all
of them from that one forward pass (models/target_capture.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.adapters.base import Adapter, SampleMaps
from models.batch import Batch
from models.engine.events import Readout


@dataclass
class Targets:
    """The targets of a batch, sample-major: target t belongs to batch position `sample[t]`."""

    sample: torch.Tensor  # (T,) long
    score_index: torch.Tensor  # (T,) long, into the sample's flattened score table
    readouts: dict[str, Readout]  # reported modality -> readout with (T, n) weights
    index: list[int]  # what the store calls target_index: the query (DETR), the generated position (seq2seq)
    labels: list[str | None]  # class name / token text
    predictions: list[int]  # class / token id
    details: list[dict]  # JSON-able description: box + class, or position + token
    notes: dict[int, str] = field(default_factory=dict)  # batch position -> note (no detections, length limit)

    def __len__(self) -> int:
        return int(self.sample.numel())

    def take(self, rows: list[int]) -> Targets:
        """The targets at `rows` (sample-major order kept), e.g. one target at a time."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self.sample.device)
        readouts = {m: Readout(r.source, r.weights[index], None if r.self_index is None else r.self_index[index])
                    for m, r in self.readouts.items()}
        return Targets(self.sample[index], self.score_index[index], readouts, *(
            [values[r] for r in rows] for values in (self.index, self.labels, self.predictions, self.details)),
            self.notes)

    @property
    def slot(self) -> torch.Tensor:
        """(T,) each target's rank among its own sample's targets (0, 1, ... per sample)."""
        starts = torch.searchsorted(self.sample, self.sample, right=False)
        return torch.arange(len(self), device=self.sample.device) - starts


class MultiTargetAdapter(Adapter):
    """`run` returns the (B, ...) score table; `select_targets` picks the pairs to explain from it."""

    predicts_class = False

    def select_targets(self, batch: Batch, logits: torch.Tensor) -> Targets:
        raise NotImplementedError

    def target_maps(self, rows: dict, batch: Batch, targets: Targets, t: int) -> SampleMaps:
        """The maps of target t from readout rows {modality: (T, n)} (numpy)."""
        raise NotImplementedError

    def perturbed_logits(self, batch: Batch, rows: torch.Tensor, keep: torch.Tensor, modality: str, mode: str,
                         positions: torch.Tensor) -> torch.Tensor:
        """As `Adapter.perturbed_logits`, read at each row's target: the score row (R, n_classes) of query /
        decoder position `positions[r]` (an explanation's `target`) of sample `rows[r]`."""
        raise NotImplementedError

