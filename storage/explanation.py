"""What one explanation is — maps per modality for one (sample, target, method) — whether the engine just computed
it (`models.explain`) or the store read it back (`Store.load_explanations`, which also fills `run_id` and `label`).
Torch-free: the store reads it without loading the engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Explanation:
    sample_id: str
    method: str
    target: int | None  # the explained class index; for many-target models the query / generated position
    target_label: str | None = None
    score: float = float("nan")  # pre-softmax score y_t being explained
    probability: float = float("nan")  # softmax probability of the target
    prediction: int | None = None  # the model's predicted class
    relevance: dict[str, np.ndarray] = field(default_factory=dict)  # image: (h, w); text: (n,)
    tokens: dict[str, list[str]] = field(default_factory=dict)
    special: dict[str, np.ndarray] = field(default_factory=dict)  # True for [CLS], [SEP], ...
    target_detail: str | None = None  # JSON: what a many-target model's target is (box + class, token + position)
    note: str | None = None  # not an error: e.g. "no detections" (then no maps), generation hit the length limit
    error: str | None = None  # why this sample has no maps; None when it has
    error_stage: str | None = None  # where it failed: input, decode, target, explain
    run_id: str | None = None  # read back from a store: the run it belongs to
    label: str | None = None  # read back from a store: the sample's dataset label

    @property
    def ok(self) -> bool:
        return self.error is None
