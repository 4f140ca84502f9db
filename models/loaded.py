"""A model ready to explain: the stock module, its adapter, device and precision."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from attn_audit.models.adapters.base import Adapter
from attn_audit.models.batch import Batch


@dataclass
class LoadedModel:
    model: torch.nn.Module
    adapter: Adapter
    ref: str
    device: torch.device
    precision: str = "float32"  # "bfloat16" / "float16": autocast of the forward on GPU
    capture: str = "fused"  # "fused" (memory-light, where the family supports it) or "eager" (the reference)

    def preprocess(self, samples: list[dict], errors: str = "raise") -> Batch:
        """Model inputs for raw samples ({"id", "image" | "text", ...}).

        errors="raise" stops at the first bad sample with a SampleError naming it;
        errors="collect" leaves bad samples out and lists them in `batch.failures`.
        """
        return self.adapter.preprocess(list(samples), errors)

    @property
    def label_names(self) -> list[str] | None:
        return self.adapter.label_names

    @property
    def class_names(self) -> list[str] | None:
        """The classes a dataset label is matched against; None when the model predicts no single class."""
        return self.label_names if self.adapter.predicts_class else None

    @property
    def num_classes(self) -> int:
        return int(self.model.config.num_labels)

    @property
    def modalities(self) -> tuple[str, ...]:
        return self.adapter.modalities
