"""Prompts of vision–language models that put one image into a language model's stream (LLaVA): the causal LM's
prompts (models/adapters/causal_lm_prompts.py) with the image's placeholder expanded to one token per image feature.

The prompt names where the image goes with the tokenizer's image token (LLaVA's `<image>`), once; a prompt without
it gets it at its start, followed by a newline (`<image>\\n…`, the layout LLaVA is trained on). Image tokens are
fixed like BOS: flagged, never removed by the text perturbation tests.
"""

from __future__ import annotations

from attn_audit.models.adapters.causal_lm_prompts import PromptEncoder
from attn_audit.models.errors import SampleError
from attn_audit.models.text import is_blank


class ImagePrompts(PromptEncoder):
    """The causal LM's prompts, each with `n_image` image tokens (id `image_id`) where its placeholder was."""

    def __init__(self, tokenizer, context: int, max_new_tokens: int, pad_id: int, truncate: bool, image_id: int,
                 n_image: int):
        super().__init__(tokenizer, context, max_new_tokens, pad_id, truncate)
        self.image_id, self.n_image = image_id, n_image
        self.placeholder = tokenizer.convert_ids_to_tokens(image_id)
        if tokenizer(self.placeholder, add_special_tokens=False)["input_ids"] != [image_id]:
            raise ValueError(f"the tokenizer does not read {self.placeholder!r} as the model's image token "
                             f"{image_id}; give the checkpoint's own tokenizer")
        self.special.add(image_id)  # tokenizers do not always list an added image token among their specials

    def _check(self, sample: dict, sid: str):
        text = sample.get("text")
        if isinstance(text, str) and not is_blank(text):  # else the causal LM's own error names what is wrong
            sample = {**sample, "text": self._with_image(text, sid)}
        ids, fixed, continuation, note = super()._check(sample, sid)
        if ids.count(self.image_id) != self.n_image:  # only truncation, which keeps the last tokens, cuts them
            raise SampleError(sid, "input", f"truncated to its last {len(ids)} tokens (all the context leaves room "
                              "for), the prompt would lose image tokens; shorten its text after the image")
        if continuation is not None and self.image_id in continuation:
            raise SampleError(sid, "input", f"the target continuation holds the image placeholder "
                              f"{self.placeholder!r}; a sample has one image, in its prompt")
        return ids, fixed, continuation, note

    def _with_image(self, text: str, sid: str) -> str:
        """The prompt with its one placeholder expanded to the image's tokens (added at the start when absent)."""
        count = text.count(self.placeholder)
        if count > 1:
            raise SampleError(sid, "input", f"the prompt names {count} images ({self.placeholder!r} {count} times); "
                              "a sample has one image")
        if count == 0:
            text = f"{self.placeholder}\n{text}"
        return text.replace(self.placeholder, self.placeholder * self.n_image)
