"""The adapter contract: everything model-family specific, and no relevancy maths.

An adapter says which modalities a model has, preprocesses raw samples, runs the stock model so
that its attention maps come back labelled as events, says which row of R is read out, and turns
readout rows into the maps users see (patch grids, token lists with special flags).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.batch import Batch
from attn_audit.models.engine.events import Capture
from attn_audit.models.errors import UnsupportedModelError


@dataclass
class SampleMaps:
    """One sample's reported maps, keyed by modality."""

    relevance: dict[str, np.ndarray]
    tokens: dict[str, list[str]] = field(default_factory=dict)
    special: dict[str, np.ndarray] = field(default_factory=dict)


class Adapter:
    family: ClassVar[str]  # e.g. "vit"
    architectures: ClassVar[tuple[str, ...]]  # Hugging Face class names it handles
    modalities: ClassVar[tuple[str, ...]]  # reported modalities
    # One class per sample, which a dataset label names (tasks/labels.py). False for detectors, generators and
    # dual encoders: their targets are the model's own detections / tokens / the pair's similarity.
    predicts_class: ClassVar[bool] = True
    # Its attention runs through transformers' attention interface, so `capture="fused"` can replace it
    # (models/engine/fused.py); LXMERT and VisualBERT have attention code of their own.
    supports_fused: ClassVar[bool] = True
    # Self-attention only, each readout on its own stream: chefer2021's rows can propagate during the backward.
    pure_self_attention: ClassVar[bool] = False

    def __init__(self, model: torch.nn.Module, **_unused_resources):
        # Resources (tokenizer, transform, ...) a family does not use are ignored, so `load` can pass all.
        self.model = model

    def preprocess(self, samples: list[dict], errors: str = "raise") -> Batch:
        raise NotImplementedError

    def batch_from_tensors(self, tensors: dict[str, torch.Tensor]) -> Batch:
        """A Batch of model inputs made elsewhere (a processor's BatchFeature, a dict): sample ids are positions."""
        n = next((len(v) for v in tensors.values() if isinstance(v, torch.Tensor) and v.dim()), 0)
        return Batch(dict(tensors), [str(i) for i in range(n)], **self.tensor_meta(tensors))

    def tensor_meta(self, tensors: dict[str, torch.Tensor]) -> dict:
        """What `maps` reads beside the tensors (e.g. a text's tokens), rebuilt from the tensors alone."""
        return {}

    def run(self, batch: Batch) -> tuple[torch.Tensor, Capture]:
        """Forward pass: (score table (B, n_targets), capture with events, masks, readouts)."""
        raise NotImplementedError

    def select_targets(self, batch: Batch, logits: torch.Tensor, capture: Capture,
                       requested: torch.Tensor | None = None) -> Targets:
        """What the pass explains, from the score table `logits` (detached): one class per sample, `requested[b]`
        (None or -1: the predicted class), read at the capture's readout rows."""
        predicted = logits.argmax(-1)
        chosen = predicted if requested is None else torch.where(requested >= 0, requested, predicted)
        return Targets.one_per_sample(chosen, predicted, capture.readouts, self.label_names)

    def attribute(self, method, capture: Capture, batch: Batch, targets: Targets) -> dict[str, torch.Tensor]:
        """`method`'s readout rows over the pass's per-target `capture`. Where one stream feeds another (a VLM's
        vision tower under its language model) the adapter composes the streams' rows here."""
        return method.attribute(capture)

    def modified_scores(self, batch: Batch, targets: Targets, dtype: torch.dtype) -> torch.Tensor:
        """The targets' scores from a forward of the model, for an LRP pass of its own (models/lrp/passes.py): (T,)
        with one target per sample, or (B, K) with target t in row targets.sample[t], column targets.index[t]."""
        return self.model(**batch.floats_as(dtype)).logits.flatten(1)[targets.sample, targets.score_index]

    def maps(self, row: dict[str, np.ndarray], batch: Batch, i: int) -> SampleMaps:
        """The maps of one target of sample i from its readout row {modality: (n,)} (numpy)."""
        raise NotImplementedError

    def target_maps(self, rows: dict[str, np.ndarray], batch: Batch, targets: Targets, t: int) -> SampleMaps:
        """The maps of target t from readout rows {modality: (T, n)} (numpy)."""
        return self.maps({k: v[t] for k, v in rows.items()}, batch, int(targets.sample[t]))

    @property
    def attention_model(self) -> torch.nn.Module:
        """The transformers model whose attention implementation a fused capture switches."""
        return self.model

    def gradient_roots(self) -> list[torch.nn.Module] | None:
        """Modules whose outputs start the gradient graph; None: the model's input embeddings."""
        return None

    def gradient_root_parameters(self) -> list[torch.nn.Parameter]:
        """Parameters that start the graph too (kept requiring grad while the others are frozen): for maps that
        depend on parameters only, whose gradient the methods still read."""
        return []

    # Perturbation tests (models.perturbation): token positions are those of the modality's flat map.
    perturbation_modes: ClassVar[tuple[str, ...]] = ()  # e.g. ("drop", "zero"); empty: not supported
    # Modalities whose tokens are regions, perturbed with the text/region step fractions (SPEC §3), not the
    # patch steps that an "image" modality of patches gets.
    region_modalities: ClassVar[tuple[str, ...]] = ()

    @property
    def perturbable_modalities(self) -> tuple[str, ...]:
        """The modalities whose tokens a perturbation test removes (encoder–decoders: the encoder's only)."""
        return self.modalities if self.perturbation_modes else ()

    def removable_tokens(self, batch: Batch, modality: str) -> torch.Tensor:
        """bool (B, L): the map positions of `modality` a perturbation test may remove (never special tokens
        or padding)."""
        raise UnsupportedModelError(f"perturbation tests are not available for {self.family} models")

    def perturbed_logits(self, batch: Batch, rows: torch.Tensor, keep: torch.Tensor, modality: str, mode: str,
                         positions: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (R, n_classes) of sample `rows[r]` of `batch` with only the map positions `keep[r]` of `modality`
        left (removable positions outside `keep` removed; the others always kept), read at score row
        `positions[r]`: the target's query / decoder position (an explanation's `target`) for many-target models;
        a classifier has one score row per sample (positions None)."""
        raise UnsupportedModelError(f"perturbation tests are not available for {self.family} models")

    def perturbing(self, batch: Batch) -> AbstractContextManager:
        """The context of one perturbation test's passes over `batch` (`perturbed_logits` calls): an adapter keeps
        what every pass shares in it (CLIP: the unperturbed candidates), and nothing after."""
        return nullcontext()

    @property
    def label_names(self) -> list[str] | None:
        id2label = getattr(self.model.config, "id2label", None) or {}
        return [id2label[k] for k in sorted(id2label)] if id2label else None
