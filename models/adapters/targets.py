"""The targets a pass explains: one per sample for classifiers, many (detections, generated tokens) for the
models that choose their own (MultiTargetAdapter). Every explanation is one target: the score it explains (an
entry of its sample's flattened score table) and the row of R it reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from attn_audit.models.engine.events import Readout


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
        readouts = {m: Readout(r.source, r.weights[index], None if r.self_index is None else r.self_index[index],
                               r.content)
                    for m, r in self.readouts.items()}
        return Targets(self.sample[index], self.score_index[index], readouts, *(
            [values[r] for r in rows] for values in (self.index, self.labels, self.predictions, self.details)),
            self.notes)

    @property
    def slot(self) -> torch.Tensor:
        """(T,) each target's rank among its own sample's targets (0, 1, ... per sample)."""
        starts = torch.searchsorted(self.sample, self.sample, right=False)
        return torch.arange(len(self), device=self.sample.device) - starts

    @staticmethod
    def one_per_sample(chosen: torch.Tensor, predicted: torch.Tensor, readouts: dict[str, Readout],
                       names: list[str] | None) -> Targets:
        """A classifier's targets: class `chosen[b]` of sample b, read at the sample's own readout row."""
        classes = chosen.tolist()
        return Targets(torch.arange(len(classes), device=chosen.device), chosen, readouts, classes,
                       [names[c] if names else None for c in classes], predicted.tolist(), [{} for _ in classes])

    def is_one_per_sample(self, batch_size: int) -> bool:
        """Target b is sample b's only one (a classifier's layout: the capture needs no per-target copy)."""
        return len(self) == batch_size and bool((self.sample == torch.arange(batch_size, device=self.sample.device))
                                                .all())
