"""Decoder-only language models (GPT-2, Llama, Qwen2, Mistral, Gemma): one target per generated (or forced) token.

`run` completes every prompt — greedy `generate` (stop tokens and limit from the generation config, or
`max_new_tokens`), or the sample's own `target` continuation (forced decoding) — then teacher-forces the left-padded
prompt + continuation in one forward pass whose causal self-attention is captured (pure self-attention, Eq. 6;
position ids count real tokens only, so padding changes nothing). The token at absolute position p is scored by the
logits at p − 1, so its readout is row p − 1 of R, over positions 0 … p − 1 (SPEC §1.10).

The readout position is a content token, not a pooling token: its own entry is reported without the identity term,
(R − I) there — which takes the method's R: chefer2021 (R = I + …) has the readout weight removed at that entry;
methods whose R has no identity term (raw attention, Grad-CAM, attention sum, rollout's row-normalised product)
report the entry as computed: the readout is a `content` one, and `models.methods.finalize_rows` applies the rule.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from attn_audit.models.adapters.base import SampleMaps
from attn_audit.models.adapters.causal_lm_prompts import PromptEncoder
from attn_audit.models.adapters.multi_target import MultiTargetAdapter
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.engine.fused import ATTENTION_NAME
from attn_audit.models.errors import UnsupportedModelError
from attn_audit.models.text import model_max_length


def _position_ids(real: torch.Tensor) -> torch.Tensor:
    """Left padding: the first real token is at position 0 (padding positions get 0, and are masked anyway)."""
    return (real.long().cumsum(-1) - 1).clamp_min(0)


def _padded_inputs(model: torch.nn.Module, ids: torch.Tensor, real: torch.Tensor) -> dict:
    """Model inputs of a left-padded batch. With padding, the causal mask is given whole (B, 1, n, n): a padding
    position sees only itself, never nothing — a query with no key at all gives NaN under sdpa and the fused capture,
    which then reaches the real tokens through 0 · NaN. Real tokens see exactly what they see unpadded."""
    inputs = {"input_ids": ids, "position_ids": _position_ids(real)}
    if bool(real.all()):
        return inputs | {"attention_mask": real.long()}
    n = ids.shape[1]
    seen = torch.ones(n, n, dtype=torch.bool, device=ids.device).tril()
    allowed = (seen & (real[:, None, :] | torch.eye(n, dtype=torch.bool, device=ids.device)))[:, None]
    if model.config._attn_implementation != "eager":  # sdpa and the attention functions of our own: boolean
        return inputs | {"attention_mask": allowed}
    dtype = model.get_input_embeddings().weight.dtype
    return inputs | {"attention_mask": torch.zeros(allowed.shape, dtype=dtype, device=ids.device)
                     .masked_fill(~allowed, torch.finfo(dtype).min)}


class CausalLMAdapter(MultiTargetAdapter):
    family = "causal-lm"
    architectures = ("GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM",
                     "GemmaForCausalLM", "Gemma2ForCausalLM")
    modalities = ("text",)
    pure_self_attention = True  # one causal stream: each target's readout row propagates in its seed slot's backward
    perturbation_modes = ("drop",)

    def __init__(self, model, tokenizer=None, max_new_tokens: int | None = None, truncate: bool = False,
                 max_length: int | None = None, **resources):
        super().__init__(model, **resources)
        if tokenizer is None:
            raise ValueError(f"{type(model).__name__} needs its tokenizer (the checkpoint folder has none)")
        self.tokenizer = tokenizer
        config = model.generation_config
        eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
        self.eos = [eos] if isinstance(eos, int) else list(eos or [])  # some checkpoints stop on any of several
        self.max_new_tokens = max_new_tokens or config.max_new_tokens or config.max_length
        pad = next((p for p in (tokenizer.pad_token_id, config.pad_token_id, *self.eos) if p is not None), 0)
        self.prompts = PromptEncoder(tokenizer, max_length or model_max_length(tokenizer, model.config),
                                     self.max_new_tokens, pad, truncate)

    @property
    def label_names(self):
        return None  # targets are vocabulary tokens, not classes

    def preprocess(self, samples, errors="raise"):
        return self.prompts.encode(samples, errors)

    def tensor_meta(self, tensors):
        ids = tensors["input_ids"]
        return self.prompts.from_tensors(ids, tensors.get("attention_mask", torch.ones_like(ids)))

    # -- completion: every prompt with its continuation, left-padded (batch.meta, made once per batch)
    def sequences(self, batch) -> dict:
        """{"ids" (B, W) left-padded prompt + continuation, "real" (B, W) bool, "continuations" (lists of ids),
        "ended" (per sample: generation stopped on a stop token; None when forced)}."""
        if "sequences" not in batch.meta:
            batch.meta["sequences"] = self._complete(batch)
        return batch.meta["sequences"]

    def _complete(self, batch) -> dict:
        continuations, ended = list(batch.meta["continuations"]), [None] * batch.size
        free = [i for i, c in enumerate(continuations) if c is None]
        device = batch["input_ids"].device
        if free:  # left-padded again: tensors made elsewhere (a tokenizer's output) may be padded on the right
            prompts = self.prompts.batch([batch.meta["prompts"][i] for i in free], [], []).to(device)
            with torch.no_grad(), _uncaptured(self.model):
                out = self.model.generate(**prompts, do_sample=False, num_beams=1, max_new_tokens=self.max_new_tokens,
                                          pad_token_id=self.prompts.pad_id)
            for i, row in zip(free, out[:, prompts["input_ids"].shape[1]:].tolist()):
                stop = next((j for j, t in enumerate(row) if t in self.eos), None)
                continuations[i], ended[i] = row[:stop], stop is not None
        full = [p + c for p, c in zip(batch.meta["prompts"], continuations)]
        width = max(len(f) for f in full)
        ids = torch.tensor([[self.prompts.pad_id] * (width - len(f)) + f for f in full], device=device)
        real = torch.arange(width, device=device)[None] >= torch.tensor([width - len(f) for f in full],
                                                                        device=device)[:, None]
        return {"ids": ids, "real": real, "continuations": continuations, "ended": ended}

    def teacher_forced(self, batch, **kwargs):
        """The stock model on every prompt + continuation, left-padded; the last token is only scored, never read."""
        seq = self.sequences(batch)
        width = max(seq["ids"].shape[1] - 1, 1)
        real = seq["real"][:, :width]
        return self.model(**_padded_inputs(self.model, seq["ids"][:, :width], real), **kwargs), real

    def run(self, batch):
        out, real = self.teacher_forced(batch, output_attentions=True)
        events = [AttentionEvent("self", "text", "text", layer, a) for layer, a in enumerate(out.attentions)]
        return out.logits, Capture(events, {"text": real}, {})

    def modified_scores(self, batch, targets, dtype):
        """(B, K): generated token k of sample b in column k (0 where b has fewer), so that each token's relevance
        comes from a backward of its own score alone."""
        picked = self.teacher_forced(batch)[0].logits.flatten(1)[targets.sample, targets.score_index]
        k = torch.as_tensor(targets.index, dtype=torch.long, device=picked.device)
        scores = picked.new_zeros(batch.size, int(k.max()) + 1 if len(k) else 1)
        return scores.index_put((targets.sample, k), picked)

    def own_targets(self, batch, logits):
        """Every continuation token, in order: token k of sample b sits at padded column q and is scored at q − 1."""
        seq = self.sequences(batch)
        width, n, vocab = seq["ids"].shape[1], *logits.shape[1:]
        device = logits.device
        lengths = [len(p) + len(c) for p, c in zip(batch.meta["prompts"], seq["continuations"])]
        sample = torch.tensor([b for b, c in enumerate(seq["continuations"]) for _ in c], dtype=torch.long,
                              device=device)
        k = [j for c in seq["continuations"] for j in range(len(c))]
        prompt = [len(batch.meta["prompts"][b]) for b in sample.tolist()]
        column = torch.tensor([width - lengths[b] + p + j for b, p, j in zip(sample.tolist(), prompt, k)],
                              dtype=torch.long, device=device)
        token = seq["ids"][sample, column]
        logprob = torch.log_softmax(logits[sample, column - 1].float(), -1).gather(1, token[:, None]).squeeze(1)
        texts = self.tokenizer.convert_ids_to_tokens(token.tolist())
        said = [self.tokenizer.decode(c, skip_special_tokens=True) for c in seq["continuations"]]
        forced = [c is not None for c in batch.meta["continuations"]]
        details = [{"position": p + j, "token_id": tok, "token": text, "logprob": lp, "continuation": said[b],
                    "forced": forced[b]}
                   for b, p, j, tok, text, lp in zip(sample.tolist(), prompt, k, token.tolist(), texts,
                                                     logprob.tolist())]
        readout = Readout("text", torch.nn.functional.one_hot(column - 1, n).float(), column - 1, content=True)
        notes = {b: f"generation hit the length limit ({self.max_new_tokens} new tokens) before a stop token"
                 for b, ended in enumerate(seq["ended"]) if ended is False}
        notes |= {b: "nothing to explain: the model generated no token before its stop token"
                  for b, c in enumerate(seq["continuations"]) if not c and b not in notes}
        return Targets(sample, (column - 1) * vocab + token, {"text": readout}, k, texts, token.tolist(), details,
                       notes)

    def target_maps(self, rows, batch, targets, t):
        i, p = int(targets.sample[t]), targets.details[t]["position"]
        seq = self.sequences(batch)
        ids = batch.meta["prompts"][i] + seq["continuations"][i]
        start = seq["ids"].shape[1] - len(ids)  # left padding
        prompt_fixed = batch.meta["fixed"][i]
        special = [*prompt_fixed, *(t in self.prompts.special for t in ids[len(prompt_fixed):])][:p]
        return SampleMaps({"text": rows["text"][t][start:start + p]},
                          {"text": self.tokenizer.convert_ids_to_tokens(ids[:p])},
                          {"text": torch.tensor(special, dtype=torch.bool).numpy()})

    # -- perturbation (SPEC §3): prompt tokens dropped, order kept; the continuation stays teacher-forced
    def removable_tokens(self, batch, modality="text"):
        """bool (B, W) over map positions (absolute, unpadded): the prompt tokens that are not special / template."""
        _require_text(modality)
        width = self.sequences(batch)["ids"].shape[1]
        out = torch.zeros(batch.size, width, dtype=torch.bool, device=batch["input_ids"].device)
        for i, fixed in enumerate(batch.meta["fixed"]):
            out[i, :len(fixed)] = ~torch.tensor(fixed, dtype=torch.bool)
        return out

    def perturbed_logits(self, batch, rows, keep, modality="text", mode="drop", positions=None):
        """Row r: sample rows[r]'s prompt with only its removable tokens in `keep[r]` left (the others always kept),
        then its continuation up to token k = positions[r] (an explanation's `target`); scored at the last position,
        which is the target's score row p − 1 shifted left by the tokens dropped before it."""
        _require_text(modality)
        if mode != "drop":
            raise ValueError(f"causal LM perturbation mode must be 'drop', got {mode!r}")
        seq = self.sequences(batch)
        ids, real = seq["ids"][rows], seq["real"][rows]
        width = ids.shape[1]
        pad = width - real.sum(1)
        j = torch.arange(width, device=ids.device)[None] - pad[:, None]  # each column's unpadded position
        at = j.clamp(0, width - 1)
        prompt = torch.tensor([len(p) for p in batch.meta["prompts"]], device=ids.device)[rows][:, None]
        removable = self.removable_tokens(batch)[rows].gather(1, at)
        kept = real & torch.where(j < prompt, keep.gather(1, at) | ~removable, j < prompt + positions[:, None])
        n = max(1, int(kept.sum(1).max()))  # a row with nothing left is one padding position
        order = torch.argsort(kept.to(torch.int8), dim=1, stable=True)[:, -n:]  # kept tokens last, order kept
        mask = kept.gather(1, order)
        ids = ids.gather(1, order).masked_fill(~mask, self.prompts.pad_id)
        out = self.model(**_padded_inputs(self.model, ids, mask), logits_to_keep=1)
        return out.logits[:, -1]


def _require_text(modality: str) -> None:
    if modality != "text":
        raise UnsupportedModelError(f"causal LM perturbation tests remove 'text' (prompt) tokens, not {modality!r}")


@contextmanager
def _uncaptured(model: torch.nn.Module):
    """Generation runs outside a fused capture (which would record every decoding step): eager meanwhile, as under
    an eager capture, so both choose the same tokens."""
    previous = model.config._attn_implementation
    if previous == ATTENTION_NAME:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
