"""Stock Hugging Face models built from tiny configs with fixed seeds, and their tokenizers."""

from __future__ import annotations

import numpy as np
import torch
import transformers as T

WORDS = ("the a cat dog sat on mat ran fast slow red blue big small house tree bird sang loud quiet"
         .split())
SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
LABELS = {0: "alpha", 1: "beta", 2: "gamma"}


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


def vit(cls=T.ViTForImageClassification, config_cls=T.ViTConfig):
    cfg = config_cls(image_size=32, patch_size=8, num_channels=3, id2label=LABELS, **SMALL)
    return _seeded(lambda: cls(cfg))


def deit():
    return vit(T.DeiTForImageClassification, T.DeiTConfig)


def bert_tokenizer():
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    return T.BertTokenizer(vocab=vocab, model_max_length=64)


def _byte_level_alphabet() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for raw bytes (GPT-2's mapping)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def roberta_tokenizer():
    vocab = {tok: i for i, tok in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])}
    for ch in _byte_level_alphabet():
        vocab.setdefault(ch, len(vocab))
    return T.RobertaTokenizer(vocab=vocab, merges=[], model_max_length=64)


def text_model(kind: str):
    """(model, tokenizer) for kind in bert / roberta / distilbert."""
    if kind == "roberta":
        tok = roberta_tokenizer()
        cfg = T.RobertaConfig(vocab_size=len(tok), max_position_embeddings=66, pad_token_id=1,
                              id2label=LABELS, **SMALL)
        return _seeded(lambda: T.RobertaForSequenceClassification(cfg)), tok
    tok = bert_tokenizer()
    if kind == "distilbert":
        cfg = T.DistilBertConfig(vocab_size=len(tok), dim=32, n_layers=3, n_heads=4, hidden_dim=64,
                                 max_position_embeddings=64, id2label=LABELS)
        return _seeded(lambda: T.DistilBertForSequenceClassification(cfg)), tok
    cfg = T.BertConfig(vocab_size=len(tok), max_position_embeddings=64, id2label=LABELS, **SMALL)
    return _seeded(lambda: T.BertForSequenceClassification(cfg)), tok


def images(n: int, size: int = 32, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"img{i}", "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)} for i in range(n)]


def texts(n: int, seed: int = 0) -> list[dict]:
    """Texts of different lengths, so a batch of them is padded."""
    rng = np.random.default_rng(seed)
    return [{"id": f"txt{i}", "text": " ".join(rng.choice(WORDS, size=2 + 3 * i % 11))} for i in range(n)]


def wrapped(kind: str, device: str = "cpu"):
    """A tiny model ready to explain: kind "vit", "deit", or a text kind of `text_model`."""
    from attn_audit import models

    if kind in ("vit", "deit"):
        return models.wrap(vit() if kind == "vit" else deit(), device=device)
    model, tok = text_model(kind)
    return models.wrap(model, device=device, tokenizer=tok)
