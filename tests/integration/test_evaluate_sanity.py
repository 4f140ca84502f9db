"""Cascading randomisation: top-down order, cumulative, seeded, and the loaded model itself untouched."""

from __future__ import annotations

import torch
from attn_audit.models.randomization import cascading_randomization, randomization_steps

from tests import tiny_models


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_cascade_order_and_cumulative_randomisation():
    m = tiny_models.wrapped("vit")
    original = _state(m.model)
    names = [name for name, _ in randomization_steps(m.model)]
    assert names == ["head", "layer.2", "layer.1", "layer.0", "embeddings"]
    seen = []
    for name, randomized in cascading_randomization(m, seed=3):
        seen.append(name)
        state = randomized.model.state_dict()
        changed = {k for k in state if not torch.equal(state[k], original[k])}
        assert any(k.startswith("classifier") for k in changed)  # the head stays randomised at every step
        if name == "layer.1":
            assert any(".layers.2." in k for k in changed) and any(".layers.1." in k for k in changed)
            assert not any(".layers.0." in k for k in changed) and not any("embeddings" in k for k in changed)
    assert seen == names
    assert all(torch.equal(v, original[k]) for k, v in m.model.state_dict().items())  # a copy was randomised


def test_randomisation_is_seeded():
    m = tiny_models.wrapped("vit")

    def state_at(seed, step):
        return next(_state(r.model) for name, r in cascading_randomization(m, seed) if name == step)

    a, b, c = state_at(3, "layer.2"), state_at(3, "layer.2"), state_at(4, "layer.2")
    assert all(torch.equal(a[k], b[k]) for k in a) and not all(torch.equal(a[k], c[k]) for k in a)


def test_text_model_layers_are_found():
    model, tok = tiny_models.text_model("distilbert")
    assert [n for n, _ in randomization_steps(model)][:2] == ["head", "layer.2"]
    model, tok = tiny_models.text_model("bert")
    assert len(randomization_steps(model)) == 5
