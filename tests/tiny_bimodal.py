"""Stock LXMERT / VisualBERT VQA models from tiny configs with fixed seeds, a word-level tokenizer, and
question + region samples (grid images and precomputed regions of different counts)."""

from __future__ import annotations

import numpy as np
import torch
import transformers as T
from attn_audit.models.regions import RegionGrid

from tests.tiny_models import WORDS, bert_tokenizer

ANSWERS = {i: f"answer{i}" for i in range(5)}
GRID = RegionGrid(grid=2, size=16)  # 4 regions of 8x8 = 64 pixel features
FEATURES = GRID.feature_dim
SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, vocab_size=len(WORDS) + 5,
             max_position_embeddings=32, id2label=ANSWERS, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0, initializer_range=0.1)  # large weights: visible gradients


def lxmert() -> T.LxmertForQuestionAnswering:
    cfg = T.LxmertConfig(l_layers=2, x_layers=2, r_layers=1, visual_feat_dim=FEATURES, visual_pos_dim=4,
                         num_qa_labels=len(ANSWERS), **SMALL)
    torch.manual_seed(0)
    return T.LxmertForQuestionAnswering(cfg).eval()


def visual_bert() -> T.VisualBertForQuestionAnswering:
    cfg = T.VisualBertConfig(num_hidden_layers=3, visual_embedding_dim=FEATURES, **SMALL)
    torch.manual_seed(0)
    return T.VisualBertForQuestionAnswering(cfg).eval()


BUILD = {"lxmert": lxmert, "visual_bert": visual_bert}


def wrapped(kind: str, **resources):
    from attn_audit import models

    return models.wrap(BUILD[kind](), device="cpu", tokenizer=bert_tokenizer(), regions=GRID, **resources)


def samples(n: int, seed: int = 0) -> list[dict]:
    """Questions of different lengths; even samples give an image (cut into the 2x2 grid), odd ones
    precomputed regions (3 to 6 of them), so a batch pads both modalities."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sample = {"id": f"q{i}", "text": " ".join(rng.choice(WORDS, size=2 + (3 * i) % 7))}
        if i % 2 == 0:
            sample["image"] = rng.integers(0, 256, (16, 16), dtype=np.uint8)
        else:
            k = 3 + i % 4
            corner = rng.random((k, 2)).astype(np.float32) * 0.5
            sample["region_features"] = rng.random((k, FEATURES)).astype(np.float32)
            sample["region_boxes"] = np.concatenate([corner, corner + 0.5], 1)
        out.append(sample)
    return out


def clip() -> T.CLIPModel:
    """A tiny CLIP: 16x16 RGB images in 4x4 patches; the text tower pools the first [SEP] (the tokenizer's)."""
    text = dict(vocab_size=len(WORDS) + 5, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, max_position_embeddings=32, eos_token_id=3, pad_token_id=0)
    vision = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
                  num_attention_heads=4, intermediate_size=64)
    torch.manual_seed(0)
    return T.CLIPModel(T.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


def pairs(n: int, seed: int = 0) -> list[dict]:
    """(image, text) pairs with texts of different lengths."""
    rng = np.random.default_rng(seed)
    return [{"id": f"p{i}", "image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
             "text": " ".join(rng.choice(WORDS, size=1 + (3 * i) % 7))} for i in range(n)]
