"""What the region-feature VQA families (LXMERT, VisualBERT) share: a question plus visual regions in, answer
logits out; text and image maps per sample; perturbation by dropping question tokens or regions.

Batch tensors: the tokenizer's `input_ids`, `attention_mask` (+ `token_type_ids`), and `region_features`
(B, V, d), `region_boxes` (B, V, 4), `region_mask` (B, V) from `models.regions`.
"""

from __future__ import annotations

import numpy as np
import torch
from attn_audit.models.adapters.base import Adapter, SampleMaps
from attn_audit.models.adapters.token_removal import compact, drop_text_tokens
from attn_audit.models.batch import Batch
from attn_audit.models.errors import AttnAuditError, UnsupportedModelError
from attn_audit.models.paired import encode_pairs
from attn_audit.models.regions import RegionGrid, pad_regions, sample_regions
from attn_audit.models.text import TextEncoder, model_max_length, removable_text_tokens

TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class RegionVqaAdapter(Adapter):
    modalities = ("text", "image")
    perturbation_modes = ("drop",)
    region_modalities = ("image",)
    supports_fused = False  # LXMERT and VisualBERT have attention code of their own (no attention interface)
    feature_dim: int  # the model's region feature size, set by the subclass
    score_name: str  # the output field holding the answer logits

    def __init__(self, model, tokenizer=None, truncate: bool = False, max_length: int | None = None,
                 regions: RegionGrid | None = None, **resources):
        super().__init__(model, **resources)
        if tokenizer is None:
            raise ValueError(f"{type(model).__name__} needs its tokenizer (the checkpoint folder has none)")
        self.encoder = TextEncoder(tokenizer, max_length or model_max_length(tokenizer, model.config), truncate)
        self.regions = regions

    def batch_from_tensors(self, tensors):
        raise AttnAuditError(f"{self.family} models need the region grid of each sample: give the Batch that "
                             "preprocess() makes")

    # -- what a family says
    def pooled_index(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B,) the question token whose state the answer head reads."""
        return torch.zeros(attention_mask.shape[0], dtype=torch.long, device=attention_mask.device)

    def forward(self, inputs: dict[str, torch.Tensor], **kwargs):
        """The stock model's output for text + region inputs (named as in the batch)."""
        raise NotImplementedError

    @staticmethod
    def text_inputs(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v for k, v in inputs.items() if k in TEXT_INPUTS}

    @staticmethod
    def graph_inputs(batch: Batch) -> dict[str, torch.Tensor]:
        """The batch with region features that start the autograd graph when gradients are on: the image
        stream does not pass through the input embeddings that models.capture makes the graph's root."""
        feats = batch["region_features"]
        return dict(batch) | {"region_features": feats.clone().requires_grad_(torch.is_grad_enabled())}

    # -- preprocessing
    def preprocess(self, samples, errors="raise"):
        kept, text = encode_pairs(samples, lambda s, sid: sample_regions(s, sid, self.regions, self.feature_dim),
                                  self.encoder, errors)
        if not text.sample_ids:
            return Batch({}, [], text.failures, tokens=[], special=[], lengths=[], grids=[], notes=[])
        tensors = {k: v for k, v in text.items() if k in TEXT_INPUTS} | pad_regions(kept)
        special = [flags.copy() for flags in text.meta["special"]]
        for flags, n in zip(special, self.pooled_index(tensors["attention_mask"]).tolist()):
            flags[n] = True  # the pooled token is the readout: reported, flagged, never removed
        return Batch(tensors, text.sample_ids, text.failures, tokens=text.meta["tokens"], special=special,
                     lengths=text.meta["lengths"], grids=[r.grid for r in kept], notes=text.meta["notes"])

    # -- reporting
    def split_row(self, row: dict[str, np.ndarray], batch: Batch) -> dict[str, np.ndarray]:
        """A readout row keyed by reported modality: (n_text,) and (n_regions,)."""
        return row

    def maps(self, row, batch, i):
        row = self.split_row(row, batch)
        n, k = batch.meta["lengths"][i], int(batch["region_mask"][i].sum())
        image = row["image"][:k]
        grid = batch.meta["grids"][i]
        return SampleMaps({"text": row["text"][:n], "image": image.reshape(grid) if grid else image},
                          {"text": batch.meta["tokens"][i]}, {"text": batch.meta["special"][i]})

    # -- perturbation: question tokens or regions are dropped from the sequence, order kept
    def removable_tokens(self, batch, modality):
        if modality == "image":
            return batch["region_mask"].bool()
        if modality != "text":
            raise UnsupportedModelError(f"{self.family} models have text and image tokens, not {modality!r}")
        return removable_text_tokens(batch)

    def perturbed_logits(self, batch, rows, keep, modality, mode="drop", positions=None):
        if mode != "drop":
            raise ValueError(f"{self.family} perturbation mode must be 'drop', got {mode!r}")
        inputs = {name: value[rows] for name, value in batch.items()}
        removable = self.removable_tokens(batch, modality)[rows]
        if modality == "text":
            inputs |= drop_text_tokens(inputs, keep, removable, [k for k in TEXT_INPUTS if k in inputs],
                                       self.encoder.tokenizer.pad_token_id)
        else:
            inputs |= compact(removable & keep, inputs, ["region_features", "region_boxes"], "region_mask")
        return getattr(self.forward(inputs), self.score_name)

