"""Tiny random-weight encoder–decoder models (DETR, ViT captioner, BART, T5) with word-level tokenizers."""

from __future__ import annotations

import numpy as np
import torch
import transformers as T
from attn_audit.models.images import PixelTransform

from attn_audit import models

WORDS = "the a cat dog sat on mat ran fast slow red blue big small house tree bird sang loud quiet".split()
SMALL = dict(hidden_size=32, num_attention_heads=4, intermediate_size=64, hidden_dropout_prob=0.0,
             attention_probs_dropout_prob=0.0)
MAX_NEW_TOKENS = 6


def _seeded(build):
    torch.manual_seed(0)
    return build().eval()


def tokenizer(specials: list[str]) -> T.BertTokenizer:
    """Word-level: the special tokens at the given ids, then WORDS."""
    return T.BertTokenizer(vocab={w: i for i, w in enumerate([*specials, *WORDS])}, do_lower_case=False,
                           model_max_length=32)


def detr(num_queries: int = 6, labels: int = 3) -> T.DetrForObjectDetection:
    backbone = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
                "layer_type": "basic", "out_features": ["stage2"], "num_channels": 3}
    cfg = T.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=32,
                       encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
                       encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=num_queries, num_labels=labels,
                       dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.3)
    model = _seeded(lambda: T.DetrForObjectDetection(cfg))
    with torch.no_grad():  # DETR's small init scores every query alike; large weights spread them
        model.model.query_position_embeddings.weight.normal_()
    return model


DETR_TRANSFORM = PixelTransform(40, 3, (0.5,) * 3, (0.5,) * 3)  # 40 px -> a 5x5 feature grid (stride 8)
DETR_THRESHOLD = 0.468  # keeps 2-6 of the 6 queries of each of `images(3, 40)`


def captioner() -> tuple[T.VisionEncoderDecoderModel, T.BertTokenizer]:
    tok = tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    encoder = T.ViTConfig(image_size=32, patch_size=8, num_channels=3, num_hidden_layers=2, **SMALL)
    decoder = T.BertConfig(vocab_size=len(tok), num_hidden_layers=2, max_position_embeddings=16, is_decoder=True,
                           add_cross_attention=True, pad_token_id=0, **SMALL)
    cfg = T.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    cfg.decoder_start_token_id, cfg.pad_token_id, cfg.eos_token_id = 2, 0, 3
    model = _seeded(lambda: T.VisionEncoderDecoderModel(config=cfg))
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    return model, tok


def bart() -> tuple[T.BartForConditionalGeneration, T.BertTokenizer]:
    tok = tokenizer(["[CLS]", "[PAD]", "[SEP]", "[UNK]"])  # BART's ids: <s> 0, <pad> 1, </s> 2
    cfg = T.BartConfig(vocab_size=len(tok), d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                       decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
                       pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, dropout=0.0,
                       attention_dropout=0.0, forced_bos_token_id=None, forced_eos_token_id=None, init_std=0.3)
    model = _seeded(lambda: T.BartForConditionalGeneration(cfg))
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    return model, tok


def t5() -> tuple[T.T5ForConditionalGeneration, T.BertTokenizer]:
    tok = tokenizer(["[PAD]", "[SEP]", "[UNK]", "[CLS]"])  # T5's ids: <pad> 0 (also the start), </s> 1
    cfg = T.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                     num_heads=4, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    model = _seeded(lambda: T.T5ForConditionalGeneration(cfg))
    model.generation_config.max_new_tokens = MAX_NEW_TOKENS
    return model, tok


def wrapped_detr(threshold: float = DETR_THRESHOLD):
    return models.wrap(detr(), device="cpu", transform=DETR_TRANSFORM, threshold=threshold)


def wrapped_generator(kind: str):
    """kind "captioner", "bart" or "t5", wrapped; random weights may end at once or emit special tokens only,
    so generation is held to at least 3 tokens that are words."""
    model, tok = {"captioner": captioner, "bart": bart, "t5": t5}[kind]()
    config = model.generation_config
    config.min_new_tokens = 3
    config.suppress_tokens = [i for i in tok.all_special_ids if i != config.eos_token_id]
    return models.wrap(model, tokenizer=tok, device="cpu")


def images(n: int, size: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": f"img{i}", "image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8)} for i in range(n)]


def texts(n: int, seed: int = 0) -> list[dict]:
    """Texts of different lengths, so a batch of them is padded."""
    rng = np.random.default_rng(seed)
    return [{"id": f"txt{i}", "text": " ".join(rng.choice(WORDS, size=2 + 3 * i % 9))} for i in range(n)]
