"""Text seq2seq (BART, T5): each generated token over the source tokens and the earlier generated tokens."""

from __future__ import annotations

import torch
from attn_audit.models.adapters.base import SampleMaps
from attn_audit.models.adapters.generation import GenerationAdapter
from attn_audit.models.adapters.token_removal import drop_text_tokens
from attn_audit.models.text import TextEncoder, model_max_length, removable_text_tokens


class Seq2SeqAdapter(GenerationAdapter):
    family = "seq2seq"
    architectures = ("BartForConditionalGeneration", "T5ForConditionalGeneration")
    modalities = ("source", "target")
    source, target = "source", "target"

    def __init__(self, model, tokenizer=None, truncate: bool = False, max_length: int | None = None, **resources):
        super().__init__(model, tokenizer=tokenizer, **resources)
        # T5 has relative positions: no position-embedding limit, the tokenizer's (or 512) applies.
        self.encoder = TextEncoder(tokenizer, max_length or model_max_length(tokenizer, model.config), truncate)

    def tensor_meta(self, tensors):
        ids = tensors["input_ids"]
        return self.encoder.token_meta(ids, tensors.get("attention_mask", torch.ones_like(ids)))

    def preprocess(self, samples, errors="raise"):
        return self.encoder.encode(samples, errors)

    def encoder_inputs(self, batch):
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    def source_mask(self, batch, n_source):
        return batch["attention_mask"].bool()

    def source_maps(self, row, batch, i):
        n = batch.meta["lengths"][i]
        return SampleMaps({"source": row[:n]}, {"source": batch.meta["tokens"][i]},
                          {"source": batch.meta["special"][i]})

    # -- perturbation of the source tokens: dropped from input_ids / attention_mask, order kept, specials stay
    perturbation_modes = ("drop",)

    def removable_source(self, batch):
        return removable_text_tokens(batch)

    def perturbed_encoder(self, batch, rows, keep, mode, forward):
        if mode != "drop":
            raise ValueError(f"seq2seq perturbation mode must be 'drop', got {mode!r}")
        inputs = {name: value[rows] for name, value in self.encoder_inputs(batch).items()}
        return forward(torch.arange(len(rows), device=rows.device), **drop_text_tokens(
            inputs, keep, self.removable_source(batch)[rows], list(inputs), self.encoder.tokenizer.pad_token_id))
