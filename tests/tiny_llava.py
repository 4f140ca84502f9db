"""A tiny random-weight LLaVA (CLIP vision tower, projector, Llama) built from configs, with the word-level tokenizer
of tests/tiny_lm.py plus an `<image>` token, and its stock LlavaProcessor (CLIPImageProcessor) built offline."""

from __future__ import annotations

import functools

import numpy as np
import torch
import transformers as T
from PIL import Image

from tests import tiny_lm

IMAGE = "<image>"
IMAGE_SIZE, PATCH = 32, 8
GRID = IMAGE_SIZE // PATCH
CONTEXT = 48  # room for the 16 image tokens, a prompt and MAX_NEW_TOKENS
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's


def tokenizer(chat: bool = True) -> T.PreTrainedTokenizerFast:
    tok = tiny_lm.tokenizer(chat=chat)
    tok.add_tokens([T.AddedToken(IMAGE, special=True, normalized=False)], special_tokens=True)
    tok.model_max_length = CONTEXT
    return tok


def llava(strategy: str = "default", feature_layer: int = -2, chat: bool = True, tower: str = "clip"):
    """(model, tokenizer): random weights (seeded), generation held to tiny_lm.MAX_NEW_TOKENS new word tokens. The
    tower is CLIP's ([CLS] + patches) or SigLIP's (patches only: strategy "full")."""
    tok = tokenizer(chat)
    vision = {"clip": T.CLIPVisionConfig, "siglip": T.SiglipVisionConfig}[tower](
        image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=64)
    text = T.LlamaConfig(vocab_size=len(tok), max_position_embeddings=CONTEXT, num_key_value_heads=2,
                         bos_token_id=tiny_lm.BOS, eos_token_id=tiny_lm.EOS, pad_token_id=tiny_lm.PAD, **tiny_lm.SMALL)
    config = T.LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids(IMAGE),
                           vision_feature_layer=feature_layer, vision_feature_select_strategy=strategy)
    torch.manual_seed(0)
    model = T.LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():  # larger weights than the init: distinct inputs get distinct, confident predictions
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)
    generation = model.generation_config
    generation.max_new_tokens = tiny_lm.MAX_NEW_TOKENS
    generation.eos_token_id, generation.pad_token_id, generation.bos_token_id = tiny_lm.EOS, tiny_lm.PAD, tiny_lm.BOS
    generation.suppress_tokens = [i for i in range(len(tiny_lm.SPECIALS)) if i != tiny_lm.EOS]
    generation.min_new_tokens = 2
    return model, tok


@functools.cache  # slow to build (it looks for torchvision); used read-only
def image_processor() -> T.CLIPImageProcessor:
    """CLIP's image preprocessing (resize, crop, normalise) at the tower's input size."""
    return T.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                "width": IMAGE_SIZE}, image_mean=list(MEAN), image_std=list(STD))


def processor(tok: T.PreTrainedTokenizerFast, config: T.LlavaConfig) -> T.LlavaProcessor:
    """The checkpoint's own preprocessing: CLIP's image processor and the tokenizer, placeholders expanded for the
    model's tower ([CLS] or not) and feature strategy."""
    cls = int(config.vision_config.model_type == "clip_vision_model")
    return T.LlavaProcessor(image_processor=image_processor(), tokenizer=tok, patch_size=PATCH, image_token=IMAGE,
                            vision_feature_select_strategy=config.vision_feature_select_strategy,
                            num_additional_image_tokens=cls)


def wrapped(capture: str = "eager", strategy: str = "default", feature_layer: int = -2, chat: bool = True,
            tower: str = "clip", **resources):
    from attn_audit.models.images import PixelTransform

    from attn_audit import models

    model, tok = llava(strategy, feature_layer, chat, tower)
    return models.wrap(model, tokenizer=tok, device="cpu", capture=capture,
                       transform=PixelTransform(IMAGE_SIZE, 3, MEAN, STD), **resources)


def samples(n: int, seed: int = 0) -> list[dict]:
    """Images at the model's input size (no resize: the stock processor and PixelTransform agree) with prompts of
    different lengths, the placeholder first, inside, or absent (then the adapter puts it first)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = list(rng.choice(tiny_lm.WORDS, size=2 + 3 * i % 5))
        text = [f"{IMAGE} " + " ".join(words), " ".join([words[0], IMAGE, *words[1:]]), " ".join(words)][i % 3]
        image = Image.fromarray(rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8))
        out.append({"id": f"s{i}", "image": image, "text": text})
    return out


def stock_prompt(text: str) -> str:
    """The prompt the stock processor gets: the placeholder where the adapter puts it."""
    return text if IMAGE in text else f"{IMAGE}\n{text}"
