"""One driver (models/run_capture.py): a classifier is the many-target case with one target per sample.

A classifier whose `select_targets` lists every class of every sample runs the many-slot path (one backward per
slot, eager: one batched vector–Jacobian product) and must give, for each class, exactly the map that explaining
that class alone gives — eager and fused, padded text and images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attn_audit.models.adapters.targets import Targets

from attn_audit import models
from tests import tiny_models

METHODS = ("chefer2021", "attn_gradcam", "raw_attention")


class EveryClass:
    """Targets: every class of every sample, sample-major (classes as the sample's slots)."""

    def __init__(self, adapter):
        self.adapter = adapter

    def __call__(self, batch, logits, capture, requested=None):
        b, c = logits.shape
        sample = torch.arange(b).repeat_interleave(c)
        cls = torch.arange(c).repeat(b)
        readouts = {k: type(r)(r.source, r.weights[sample], None if r.self_index is None else r.self_index[sample])
                    for k, r in capture.readouts.items()}
        return Targets(sample, cls, readouts, cls.tolist(), [None] * len(cls), logits.argmax(-1)[sample].tolist(),
                       [{} for _ in cls])


@pytest.mark.parametrize("capture", ["eager", "fused"])
@pytest.mark.parametrize("kind", ["vit", "bert"])
def test_every_class_at_once_equals_each_class_alone(kind, capture, monkeypatch):
    m = tiny_models.wrapped(kind)
    m.capture = capture
    samples = tiny_models.images(2) if kind == "vit" else tiny_models.texts(3)  # texts of different lengths
    batch = m.preprocess(samples)
    alone = {(e.sample_id, e.method, c): e for c in range(m.num_classes)
             for e in models.explain(m, batch, list(METHODS), target=c)}
    monkeypatch.setattr(m.adapter, "select_targets", EveryClass(m.adapter))
    together = models.explain(m, batch, list(METHODS))
    assert len(together) == batch.size * m.num_classes * len(METHODS)
    for e in together:
        want = alone[(e.sample_id, e.method, e.target)]
        assert e.score == pytest.approx(want.score, abs=1e-6)
        for modality, values in want.relevance.items():
            scale = max(float(np.abs(values).max()), 1e-12)
            np.testing.assert_allclose(e.relevance[modality] / scale, values / scale, atol=1e-5,
                                       err_msg=f"{e.method} {e.sample_id} class {e.target}")


def test_a_classifier_capture_is_not_copied_per_target():
    """One target per sample: the per-target capture is the pass's own (no (B, heads, n, n) copy)."""
    from attn_audit.models.capture import CapturePlan
    from attn_audit.models.run_capture import run_capture

    m = tiny_models.wrapped("vit")
    result = run_capture(m.adapter, m.preprocess(tiny_models.images(3)), CapturePlan(False, frozenset({"mean"})),
                         requested=torch.tensor([2, -1, 0]))
    assert result.targets.index[0] == 2 and result.targets.index[2] == 0
    assert result.targets.index[1] == result.targets.predictions[1]
    assert result.targets.is_one_per_sample(3)
    assert all(e.attn.shape[0] == 3 for e in result.capture.events)
