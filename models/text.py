"""Text encoding with per-sample checks: empty and over-long texts are named, never guessed."""

from __future__ import annotations

import unicodedata

import numpy as np
import torch
from attn_audit.models.batch import Batch, collect
from attn_audit.models.errors import AttnAuditError, SampleError


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

    def _check(self, sample: dict, sid: str) -> tuple[str, int]:
        """The sample's text and its length in tokens (tokenised alone, so the notes can say what truncation
        cut); every reason it cannot be encoded is its SampleError."""
        if "text" not in sample:
            given = ", ".join(sorted(sample)) or "nothing"
            raise SampleError(sid, "input", f"this text model needs a 'text'; the sample has {given}")
        text = sample["text"]
        if not isinstance(text, str):
            raise SampleError(sid, "input", f"text must be a string, got {type(text).__name__}")
        if is_blank(text):
            raise SampleError(sid, "input", "text is empty" if not text.strip() else
                              "text is empty: it has only invisible characters (zero-width, format, control)")
        _refuse_surrogates(text, sid)
        enc = self.tokenizer(text, truncation=False, return_special_tokens_mask=True)
        n = len(enc["input_ids"])
        if n == sum(enc["special_tokens_mask"]):
            raise SampleError(sid, "input", "text is empty to the model: it tokenizes to special tokens only")
        if n > self.max_length and not self.truncate:
            raise SampleError(sid, "input", f"text has {n} tokens, the model takes at most "
                              f"{self.max_length}; pass truncate=True (CLI: --truncate) to explain "
                              "the first part")
        return text, n

    def encode(self, samples: list[dict], errors: str = "raise") -> Batch:
        checked, ids, failures = collect(samples, self._check, errors)
        if not checked:
            return Batch({}, [], failures, tokens=[], special=[], lengths=[], notes=[])
        texts, full = zip(*checked)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt", return_special_tokens_mask=True)
        # What truncation cut, per sample (None: whole text), so each explanation can say so.
        notes = [f"text truncated to the model's {self.max_length} tokens (it has {n}): the maps cover the first "
                 "part" if n > self.max_length else None for n in full]
        tensors = {k: enc[k] for k in self.tokenizer.model_input_names if k in enc}
        meta = self.token_meta(enc["input_ids"], enc["attention_mask"], enc["special_tokens_mask"])
        return Batch(tensors, ids, failures, **meta, notes=notes)

    def token_meta(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   special_tokens_mask: torch.Tensor | None = None) -> dict:
        """What the maps report per text: its tokens, which are special ([CLS], [SEP], ...), its length. From a
        right-padded batch (a tokenizer's own output too)."""
        mask = attention_mask.bool()
        lengths = mask.sum(1).tolist()
        if not all(bool(row[:n].all()) for row, n in zip(mask, lengths)):
            raise AttnAuditError("the texts must be right-padded (tokenizer.padding_side = 'right'): the maps are "
                                 "read from the first tokens")
        ids = input_ids.tolist()
        if special_tokens_mask is None:
            flags = [self.tokenizer.get_special_tokens_mask(row[:n], already_has_special_tokens=True)
                     for row, n in zip(ids, lengths)]
        else:
            flags = [row[:n] for row, n in zip(special_tokens_mask.tolist(), lengths)]
        return {"tokens": [self.tokenizer.convert_ids_to_tokens(row[:n]) for row, n in zip(ids, lengths)],
                "special": [np.asarray(f, dtype=bool) for f in flags], "lengths": lengths}


_INVISIBLE_CATEGORIES = {"Cc", "Cf", "Zs"}


def is_blank(text: str) -> bool:
    """True for a text with nothing to read: only whitespace, control and format characters (zero-width
    spaces and joiners, the byte-order mark, ...), which tokenizers drop, leaving [CLS] [SEP]."""
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE_CATEGORIES for ch in text)


def _refuse_surrogates(text: str, sid: str) -> None:
    """A lone UTF-16 surrogate (half of an emoji, from a broken "\\ud83d" JSON escape) is no character: the
    tokenizer raises on it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise SampleError(sid, "input", f"text holds a lone surrogate U+{ord(text[err.start]):04X} at character "
                          f"{err.start}, which is not valid Unicode; repair the text's encoding") from None


def removable_text_tokens(batch: Batch) -> torch.Tensor:
    """bool (B, L): the tokens a perturbation test may remove from a batch `TextEncoder.encode` made: real
    (not padding) and not special ([CLS], [SEP], ...)."""
    mask = batch["attention_mask"].bool()
    special = torch.zeros_like(mask)
    for i, flags in enumerate(batch.meta["special"]):
        special[i, :len(flags)] = torch.as_tensor(flags, device=mask.device)
    return mask & ~special
