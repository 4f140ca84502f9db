"""BERT-family sequence classifiers ([CLS] readout) and mean-pooling encoders (mean readout)."""

from __future__ import annotations

import torch

from models.adapters.base import Adapter, SampleMaps
from models.engine.events import AttentionEvent, Capture, Readout
from models.text import TextEncoder, model_max_length


class TextClassifierAdapter(Adapter):
    family = "bert"
    architectures = ("BertForSequenceClassification", "RobertaForSequenceClassification",
                     "DistilBertForSequenceClassification")
    modalities = ("text",)

    def __init__(self, model, tokenizer=None, truncate: bool = False, max_length: int | None = None,
                 **resources):
        super().__init__(model, **resources)
        if tokenizer is None:
            raise ValueError(f"{type(model).__name__} needs its tokenizer (the checkpoint folder has none)")
        self.encoder = TextEncoder(tokenizer, max_length or model_max_length(tokenizer, model.config), truncate)

    def preprocess(self, samples, errors="raise"):
        return self.encoder.encode(samples, errors)

    def readout(self, mask) -> Readout:
        return Readout.token("text", 0, mask.shape[1], mask.shape[0], device=mask.device)

    def run(self, batch):
        out = self.model(**batch, output_attentions=True)
        mask = batch["attention_mask"].bool()
        events = [AttentionEvent("self", "text", "text", layer, a) for layer, a in enumerate(out.attentions)]
        return out.logits, Capture(events, {"text": mask}, {"text": self.readout(mask)})

    def maps(self, rows, batch, i):
        n = batch.meta["lengths"][i]
        return SampleMaps({"text": rows["text"][i, :n]}, {"text": batch.meta["tokens"][i]},
                          {"text": batch.meta["special"][i]})

    # -- perturbation: tokens are dropped from input_ids / attention_mask, order kept
    perturbation_modes = ("drop",)

    def removable_tokens(self, batch, modality="text"):
        mask = batch["attention_mask"].bool()
        special = torch.zeros_like(mask)
        for i, flags in enumerate(batch.meta["special"]):
            special[i, :len(flags)] = torch.as_tensor(flags, device=mask.device)
        return mask & ~special

    def perturbed_logits(self, batch, rows, keep, modality="text", mode="drop"):
        if mode != "drop":
            raise ValueError(f"text perturbation mode must be 'drop', got {mode!r}")
        mask = batch["attention_mask"][rows].bool()
        kept = mask & (keep | ~self.removable_tokens(batch)[rows])  # special tokens always stay
        order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)[:, :int(kept.sum(1).max())]
        inputs = {name: value[rows].gather(1, order) for name, value in batch.items() if name != "attention_mask"}
        new_mask = kept.gather(1, order)
        inputs["input_ids"] = inputs["input_ids"].masked_fill(~new_mask, self.encoder.tokenizer.pad_token_id or 0)
        return self.model(**inputs, attention_mask=new_mask.long()).logits


class MeanPoolAdapter(TextClassifierAdapter):
    """An encoder whose classifier reads the mean of the non-padding token states."""

    family = "mean-pool"
    architectures = ("MeanPoolingClassifier",)

    def readout(self, mask) -> Readout:
        return Readout.mean("text", mask)
