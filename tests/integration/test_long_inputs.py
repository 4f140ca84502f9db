"""A 4,096-token text through a BERT-shaped model with 4,096 positions: the fused capture explains it in one pass
holding no (n × n) map, equal to the eager capture (which holds 2 × layers × heads of them, ~1 GB here)."""

import dataclasses

import numpy as np
import pytest
import torch
import transformers as T

from attn_audit import models
from tests.tiny_models import bert_tokenizer

pytestmark = pytest.mark.slow
TOKENS = 4096


def test_a_4096_token_text_is_explained_whole():
    torch.manual_seed(0)
    config = T.BertConfig(vocab_size=30, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, max_position_embeddings=TOKENS, num_labels=2)
    m = models.wrap(T.BertForSequenceClassification(config).eval(), tokenizer=bert_tokenizer(), device="cpu",
                    max_length=TOKENS)
    batch = m.preprocess([{"id": "long", "text": " ".join(["good", "bad"] * ((TOKENS - 2) // 2))}])
    assert batch["input_ids"].shape == (1, TOKENS)
    (fused,) = models.explain(m, batch, "chefer2021")
    assert fused.ok and fused.relevance["text"].shape == (TOKENS,) and len(fused.tokens["text"]) == TOKENS
    (eager,) = models.explain(dataclasses.replace(m, capture="eager"), batch, "chefer2021")
    scale = np.abs(eager.relevance["text"]).max()
    np.testing.assert_allclose(fused.relevance["text"], eager.relevance["text"], atol=1e-5 * scale)
