"""The perturbation passes run transformers' SDPA attention where the whole model has it, and the loaded model's
eager attention (which the captures need) again afterwards; the curves are the eager ones."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
from attn_audit.models import perturbation
from attn_audit.models.engine.attention_registry import sdpa
from attn_audit.models.perturbation import perturbation_curves
from transformers import PreTrainedModel

from attn_audit import models
from tests import tiny_bimodal, tiny_encdec, tiny_models

TEXT_STEPS = [0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]


def implementations(model) -> set[str]:
    return {m.config._attn_implementation for m in model.modules() if isinstance(m, PreTrainedModel)}


@pytest.fixture(scope="module")
def bert():
    return tiny_models.wrapped("bert")


def test_inside_the_model_runs_sdpa_and_eager_again_after_even_on_an_error(bert):
    with sdpa(bert.model):
        assert implementations(bert.model) == {"sdpa"}
    assert implementations(bert.model) == {"eager"}
    with pytest.raises(RuntimeError), sdpa(bert.model):
        raise RuntimeError("a failing pass")
    assert implementations(bert.model) == {"eager"}


@pytest.mark.parametrize("build", [lambda: tiny_bimodal.wrapped("lxmert"), tiny_encdec.wrapped_detr],
                         ids=["lxmert (no run-time switch)", "detr (a ResNet backbone without sdpa)"])
def test_a_model_without_sdpa_throughout_stays_as_it_is(build):
    m = build()
    before = implementations(m.model)
    with sdpa(m.model):
        assert implementations(m.model) == before
    assert implementations(m.model) == before


def test_the_curves_are_the_eager_ones_and_the_passes_ran_sdpa(bert, monkeypatch):
    samples = tiny_models.texts(4)
    batch = bert.preprocess(samples)
    maps = [np.random.default_rng(i).standard_normal(int(n)).astype(np.float32)
            for i, n in enumerate(batch.meta["lengths"])]

    def curves():
        return perturbation_curves(bert, batch, "text", maps, [0, 1, 2, 0], TEXT_STEPS, max_rows=5)

    seen = []
    perturbed_logits = bert.adapter.perturbed_logits
    monkeypatch.setattr(bert.adapter, "perturbed_logits",
                        lambda *a, **kw: seen.append(implementations(bert.model)) or perturbed_logits(*a, **kw))
    fast = curves()
    assert seen and all(s == {"sdpa"} for s in seen)
    monkeypatch.setattr(perturbation, "sdpa", lambda model: nullcontext())
    eager = curves()
    assert seen[-1] == {"eager"}
    np.testing.assert_allclose(fast.probability, eager.probability, atol=1e-6)
    np.testing.assert_allclose(fast.score, eager.score, atol=1e-5)
    np.testing.assert_array_equal(fast.prediction, eager.prediction)


def test_a_captioner_generates_what_it_teacher_forces_before_the_passes_switch(monkeypatch):
    """Greedy decoding runs with the attention it ran with when explaining; only the teacher-forced passes run SDPA."""
    m = tiny_encdec.wrapped_generator("captioner")
    batch = m.preprocess(tiny_encdec.images(2, 32))
    exps = [x for x in models.explain(m, m.preprocess(tiny_encdec.images(2, 32)), method="raw_attention") if x.ok]
    seen = {}
    generate, perturbed_logits = m.adapter.generate, m.adapter.perturbed_logits
    monkeypatch.setattr(m.adapter, "generate", lambda b: seen.setdefault("generate", implementations(m.model))
                        and generate(b))
    monkeypatch.setattr(m.adapter, "perturbed_logits", lambda *a, **kw: seen.setdefault(
        "passes", implementations(m.model)) and perturbed_logits(*a, **kw))
    position = {sid: i for i, sid in enumerate(batch.sample_ids)}
    perturbation_curves(m, batch, "image", [x.relevance["image"] for x in exps], [x.prediction for x in exps],
                        [0.0, 0.5], samples=[position[x.sample_id] for x in exps], mode="drop",
                        positions=[x.target for x in exps])
    assert seen == {"generate": {"eager"}, "passes": {"sdpa"}}
