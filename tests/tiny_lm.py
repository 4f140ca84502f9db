"""Tiny random-weight decoder-only language models (GPT-2, Llama, Qwen2, Mistral, Gemma) with a word-level tokenizer
built offline: `<s>` starts every prompt (not for GPT-2, which has none), `</s>` ends generation, and a chat template
wraps the prompt in `<|user|>` … `<|assistant|>` tokens."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as T
from attn_audit.models import explain
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

WORDS = "the a cat dog sat on mat ran fast slow red blue big small house tree bird sang loud quiet".split()
SPECIALS = ["<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>"]
PAD, BOS, EOS = 0, 1, 2
CHAT_TEMPLATE = ("{% for m in messages %}<|user|> {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")
CONTEXT = 24  # max_position_embeddings: small, so over-long prompts are cheap to build
MAX_NEW_TOKENS = 5
SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
KINDS = ("gpt2", "llama", "qwen2", "mistral", "gemma")


def tokenizer(bos: bool = True, chat: bool = True) -> T.PreTrainedTokenizerFast:
    vocab = {w: i for i, w in enumerate([*SPECIALS, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece()  # words joined by spaces, also once saved and loaded
    if bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    tok = T.PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                    unk_token="<unk>", additional_special_tokens=SPECIALS[4:],
                                    model_max_length=CONTEXT)
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def _config(kind: str, vocab: int):
    ids = dict(vocab_size=vocab, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD)
    if kind == "gpt2":
        return T.GPT2Config(n_embd=32, n_layer=3, n_head=4, n_inner=64, n_positions=CONTEXT, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    rope = dict(max_position_embeddings=CONTEXT, num_key_value_heads=2, **SMALL, **ids)  # grouped-query attention
    if kind == "llama":
        return T.LlamaConfig(**rope)
    if kind == "qwen2":
        return T.Qwen2Config(**rope)
    if kind == "mistral":
        return T.MistralConfig(sliding_window=None, **rope)
    if kind == "gemma":
        return T.GemmaConfig(head_dim=8, **rope)
    raise ValueError(kind)


def causal_lm(kind: str, chat: bool = True):
    """(model, tokenizer): random weights (seeded), generation held to MAX_NEW_TOKENS new word tokens."""
    tok = tokenizer(bos=kind != "gpt2", chat=chat)
    cfg = _config(kind, len(tok))
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(cfg).eval()
    with torch.no_grad():  # larger weights than the init: distinct tokens get distinct, confident predictions
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    config = model.generation_config
    config.max_new_tokens = MAX_NEW_TOKENS
    config.eos_token_id, config.pad_token_id, config.bos_token_id = EOS, PAD, BOS
    config.suppress_tokens = [i for i in range(len(SPECIALS)) if i != EOS]  # words, or the end token
    config.min_new_tokens = 2
    return model, tok


def wrapped(kind: str, chat: bool = True, **resources):
    from attn_audit import models

    model, tok = causal_lm(kind, chat)
    return models.wrap(model, tokenizer=tok, device="cpu", **resources)


def prompts(n: int, seed: int = 0) -> list[dict]:
    """Prompts of different lengths, so a batch of them is left-padded."""
    rng = np.random.default_rng(seed)
    return [{"id": f"p{i}", "text": " ".join(rng.choice(WORDS, size=2 + 3 * i % 7))} for i in range(n)]


def assert_batched_equals_alone(m, samples: list[dict], methods: list[str], modalities: tuple[str, ...],
                                tol: float) -> None:
    """Explained together (left-padded) and one sample at a time: the same targets, details, tokens and maps."""
    together = explain(m, m.preprocess(samples), method=methods)
    alone = [e for s in samples for e in explain(m, m.preprocess([s]), method=methods)]
    assert [(e.sample_id, e.target, e.method) for e in together] == [(e.sample_id, e.target, e.method) for e in alone]
    for a, b in zip(alone, together):
        da, db = json.loads(a.target_detail), json.loads(b.target_detail)
        assert da.pop("logprob") == pytest.approx(db.pop("logprob"), abs=tol) and da == db and a.tokens == b.tokens
        for modality in modalities:
            np.testing.assert_allclose(b.relevance[modality], a.relevance[modality], atol=tol,
                                       err_msg=f"{a.method} {modality}")
