"""Prompts of decoder-only language models: plain, chat-templated or with a continuation to explain, checked per
sample and left-padded (the next token of every row is then scored at the batch's last column)."""

from __future__ import annotations

import torch
from attn_audit.models.batch import Batch, collect
from attn_audit.models.errors import SampleError
from attn_audit.models.text import _refuse_surrogates, is_blank


def _text(sample: dict, key: str, sid: str, what: str) -> str:
    text = sample[key]
    if not isinstance(text, str):
        raise SampleError(sid, "input", f"{what} must be a string, got {type(text).__name__}")
    if is_blank(text):
        raise SampleError(sid, "input", f"{what} is empty")
    _refuse_surrogates(text, sid)
    return text


class PromptEncoder:
    """Samples `{"text": prompt}`, `{"text": prompt, "chat": true}` or `{"text": prompt, "target": continuation}`.

    Per sample: the prompt's token ids, which of them are `fixed` (special tokens such as BOS and the chat
    template's own tokens: flagged in the maps, never removed by perturbation tests), and the continuation's ids
    (None: generate). A prompt must leave room in the context for what follows it (the continuation, or
    `max_new_tokens`); `truncate=True` keeps its last tokens instead of refusing it.
    """

    def __init__(self, tokenizer, context: int, max_new_tokens: int, pad_id: int, truncate: bool = False):
        self.tokenizer, self.context, self.max_new_tokens = tokenizer, context, max_new_tokens
        self.pad_id, self.truncate = pad_id, truncate
        self.special = set(tokenizer.all_special_ids)

    def encode(self, samples: list[dict], errors: str = "raise") -> Batch:
        checked, ids, failures = collect(samples, self._check, errors)
        prompts, fixed, continuations, notes = (list(column) for column in zip(*checked)) if checked else ([],) * 4
        return self.batch(prompts, fixed, continuations, ids, failures, notes)

    def batch(self, prompts, fixed, continuations, ids=(), failures=None, notes=None) -> Batch:
        """Left-padded `input_ids` / `attention_mask` of the prompts, with what the adapter reads beside them."""
        width = max((len(p) for p in prompts), default=0)
        shape = (len(prompts), width)
        input_ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
        return Batch({"input_ids": input_ids.view(shape), "attention_mask": mask.view(shape)},
                     list(ids), failures, prompts=prompts, fixed=fixed, continuations=continuations,
                     notes=notes or [None] * len(prompts))

    def from_tensors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        """The per-sample prompts of a tokenizer's output (padded on either side); special ids are fixed."""
        prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask)]
        return {"prompts": prompts, "fixed": [[t in self.special for t in p] for p in prompts],
                "continuations": [None] * len(prompts), "notes": [None] * len(prompts)}

    def _check(self, sample: dict, sid: str):
        if "text" not in sample:
            given = ", ".join(sorted(sample)) or "nothing"
            raise SampleError(sid, "input", f"a language model needs a 'text' (the prompt); the sample has {given}")
        text = _text(sample, "text", sid, "prompt")
        ids, fixed = self._chat(text, sid) if sample.get("chat") else self._plain(text)
        if all(fixed):
            raise SampleError(sid, "input", "prompt is empty to the model: it tokenizes to special tokens only")
        continuation = None
        if sample.get("target") is not None:
            continuation = self.tokenizer(_text(sample, "target", sid, "target continuation"),
                                          add_special_tokens=False)["input_ids"]
        room = self.context - (len(continuation) if continuation is not None else self.max_new_tokens)
        if room < 1:
            raise SampleError(sid, "input", f"the target continuation has {len(continuation)} tokens, the model's "
                              f"context is {self.context}")
        note = None
        if len(ids) > room:
            after = "the continuation" if continuation is not None else f"{self.max_new_tokens} new tokens"
            if not self.truncate:
                raise SampleError(sid, "input", f"prompt has {len(ids)} tokens; with {after} the model's context "
                                  f"of {self.context} leaves room for {room}; pass truncate=True (CLI: --truncate) "
                                  "to explain its last tokens")
            note = f"prompt truncated to its last {room} tokens (it has {len(ids)}) to leave room for {after}"
            ids, fixed = ids[-room:], fixed[-room:]
        return ids, fixed, continuation, note

    def _plain(self, text: str) -> tuple[list[int], list[bool]]:
        enc = self.tokenizer(text, return_special_tokens_mask=True)  # marks the specials the tokenizer adds (BOS)
        return enc["input_ids"], [bool(f) or t in self.special for t, f in zip(enc["input_ids"],
                                                                                enc["special_tokens_mask"])]

    def _chat(self, text: str, sid: str) -> tuple[list[int], list[bool]]:
        """The user turn in the tokenizer's chat template, with the generation prompt; tokens outside the user's
        text (by their character offsets; without offsets, the special ids) are the template's."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise SampleError(sid, "input", "the sample asks for a chat template but the tokenizer has none; "
                              "leave 'chat' out to explain the plain prompt")
        rendered = self.tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                      add_generation_prompt=True)
        enc = self.tokenizer(rendered, add_special_tokens=False, return_offsets_mapping=self.tokenizer.is_fast)
        start, end = rendered.rfind(text), rendered.rfind(text) + len(text)
        spans = enc.get("offset_mapping") or [(start, end)] * len(enc["input_ids"])
        fixed = [t in self.special or not start <= a < b <= end for t, (a, b) in zip(enc["input_ids"], spans)]
        return enc["input_ids"], fixed
