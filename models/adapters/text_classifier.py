"""BERT-family sequence classifiers ([CLS] readout) and mean-pooling encoders (mean readout)."""

from __future__ import annotations

import torch
from attn_audit.models.adapters.base import Adapter, SampleMaps
from attn_audit.models.adapters.token_removal import drop_text_tokens
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.text import TextEncoder, model_max_length, removable_text_tokens


class TextClassifierAdapter(Adapter):
    family = "bert"
    architectures = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                     "DistilBertForSequenceClassification")
    modalities = ("text",)
    pure_self_attention = True

    def __init__(self, model, tokenizer=None, truncate: bool = False, max_length: int | None = None,
                 **resources):
        super().__init__(model, **resources)
        if tokenizer is None:
            raise ValueError(f"{type(model).__name__} needs its tokenizer (the checkpoint folder has none)")
        self.encoder = TextEncoder(tokenizer, max_length or model_max_length(tokenizer, model.config), truncate)

    def tensor_meta(self, tensors):
        ids = tensors["input_ids"]
        return self.encoder.token_meta(ids, tensors.get("attention_mask", torch.ones_like(ids)))

    def preprocess(self, samples, errors="raise"):
        return self.encoder.encode(samples, errors)

    def readout(self, mask) -> Readout:
        return Readout.token("text", 0, mask.shape[1], mask.shape[0], device=mask.device)

    def run(self, batch):
        out = self.model(**batch, output_attentions=True)
        mask = batch["attention_mask"].bool()
        events = [AttentionEvent("self", "text", "text", layer, a) for layer, a in enumerate(out.attentions)]
        return out.logits, Capture(events, {"text": mask}, {"text": self.readout(mask)})

    def maps(self, row, batch, i):
        n = batch.meta["lengths"][i]
        return SampleMaps({"text": row["text"][:n]}, {"text": batch.meta["tokens"][i]},
                          {"text": batch.meta["special"][i]})

    # -- perturbation: tokens are dropped from input_ids / attention_mask, order kept
    perturbation_modes = ("drop",)

    def removable_tokens(self, batch, modality="text"):
        return removable_text_tokens(batch)

    def perturbed_logits(self, batch, rows, keep, modality="text", mode="drop", positions=None):
        if mode != "drop":
            raise ValueError(f"text perturbation mode must be 'drop', got {mode!r}")
        inputs = {name: value[rows] for name, value in batch.items()}
        return self.model(**drop_text_tokens(inputs, keep, self.removable_tokens(batch)[rows], list(inputs),
                                             self.encoder.tokenizer.pad_token_id)).logits


class MeanPoolAdapter(TextClassifierAdapter):
    """An encoder whose classifier reads the mean of the non-padding token states."""

    family = "mean-pool"
    architectures = ("MeanPoolingClassifier",)

    def readout(self, mask) -> Readout:
        return Readout.mean("text", mask)

    @property
    def attention_model(self):
        return self.model.encoder
