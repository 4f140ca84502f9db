"""DETR's first decoder self-attention depends on the learned object queries alone (its input is zero), yet its
gradient is not zero (V is the value projection's bias), and the authors' DETR code uses it: the capture roots
the graph at the query position embeddings too, so chefer2021 on DETR follows that code."""

import dataclasses

import numpy as np
import torch
from attn_audit.models.capture import CapturePlan
from attn_audit.models.run_capture import run_capture
from attn_audit.storage.datasets import open_dataset

from attn_audit import models


def test_the_first_decoder_self_attention_gets_its_gradient_as_the_authors_code_does():
    m = models.load("builtin:fashion-detr", device="cpu")
    batch = m.preprocess([open_dataset("builtin:fashion-detect")[0]])
    result = run_capture(m.adapter, batch, CapturePlan(False, frozenset({"gradient_weighted"})))
    query, cls = result.targets.index[0], result.targets.predictions[0]
    first_engine = next(e for e in result.capture.events if (e.query, e.key) == ("query", "query"))

    # the reference: the stock model with every weight trainable, backward from that detection's logit
    with torch.enable_grad():
        out = m.model(pixel_values=batch["pixel_values"], output_attentions=True)
        first = out.decoder_attentions[0]
        first.retain_grad()
        out.logits[0, query, cls].backward()
    m.model.zero_grad(set_to_none=True)
    assert float(first.grad.abs().max()) > 1e-6  # not zero: the bias of V carries it
    torch.testing.assert_close(first_engine.grad[0], first.grad[0], atol=1e-6, rtol=1e-4)

    exps = models.explain(m, batch, "chefer2021")
    assert all(p.grad is None for p in m.model.parameters())  # no weight gradient left behind
    eager = models.explain(dataclasses.replace(m, capture="eager"), batch, "chefer2021")
    for a, b in zip(exps, eager):
        scale = np.abs(b.relevance["image"]).max()
        np.testing.assert_allclose(a.relevance["image"], b.relevance["image"], atol=1e-5 * scale)
