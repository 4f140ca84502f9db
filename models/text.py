"""Text encoding with per-sample checks: empty and over-long texts are named, never guessed."""

from __future__ import annotations

import numpy as np
import torch

from models.batch import Batch, collect
from models.errors import SampleError


def model_max_length(tokenizer, config) -> int:
    """The longest sequence the checkpoint takes, position-embedding offsets included."""
    limit = int(getattr(config, "max_position_embeddings", 512))
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        limit -= int(config.pad_token_id) + 1  # RoBERTa positions start after the padding index
    declared = int(getattr(tokenizer, "model_max_length", limit) or limit)
    return min(limit, declared) if declared < 1_000_000 else limit


class TextEncoder:
    """Tokenise a batch, right-padded; `truncate=False` turns over-long texts into sample errors."""

    def __init__(self, tokenizer, max_length: int, truncate: bool = False):
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"  # the [CLS] readout assumes it sits at position 0
        self.max_length = max_length
        self.truncate = truncate

    def _check(self, sample: dict, sid: str) -> str:
        if "text" not in sample:
            given = ", ".join(sorted(sample)) or "nothing"
            raise SampleError(sid, "input", f"this text model needs a 'text'; the sample has {given}")
        text = sample["text"]
        if not isinstance(text, str):
            raise SampleError(sid, "input", f"text must be a string, got {type(text).__name__}")
        if not text.strip():
            raise SampleError(sid, "input", "text is empty")
        if not self.truncate:
            n = len(self.tokenizer(text, truncation=False)["input_ids"])
            if n > self.max_length:
                raise SampleError(sid, "input", f"text has {n} tokens, the model takes at most "
                                  f"{self.max_length}; pass truncate=True (CLI: --truncate) to explain "
                                  "the first part")
        return text

    def encode(self, samples: list[dict], errors: str = "raise") -> Batch:
        texts, ids, failures = collect(samples, self._check, errors)
        if not texts:
            return Batch({}, [], failures, tokens=[], special=[], lengths=[], notes=[])
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", return_special_tokens_mask=True)
        lengths = enc["attention_mask"].sum(1).tolist()
        # What truncation cut, per sample (None: whole text), so each explanation can say so.
        full = [len(x) for x in self.tokenizer(texts, truncation=False)["input_ids"]] if self.truncate else lengths
        notes = [f"text truncated to the model's {self.max_length} tokens (it has {n}): the maps cover the first "
                 "part" if n > self.max_length else None for n in full]
        ids_list = enc["input_ids"].tolist()
        tokens = [self.tokenizer.convert_ids_to_tokens(row[:n]) for row, n in zip(ids_list, lengths)]
        special = [np.asarray(row[:n], dtype=bool) for row, n in zip(enc["special_tokens_mask"].tolist(), lengths)]
        tensors = {k: enc[k] for k in self.tokenizer.model_input_names if k in enc}
        return Batch(tensors, ids, failures, tokens=tokens, special=special, lengths=lengths, notes=notes)


def removable_text_tokens(batch: Batch) -> torch.Tensor:
    """bool (B, L): the tokens a perturbation test may remove from a batch `TextEncoder.encode` made: real
    (not padding) and not special ([CLS], [SEP], ...)."""
    mask = batch["attention_mask"].bool()
    special = torch.zeros_like(mask)
    for i, flags in enumerate(batch.meta["special"]):
        special[i, :len(flags)] = torch.as_tensor(flags, device=mask.device)
    return mask & ~special
