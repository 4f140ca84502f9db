"""Cascading randomisation: top-down order, cumulative, seeded, and the loaded model itself untouched."""

from __future__ import annotations

import torch
from attn_audit.models.randomization import cascading_randomization, randomization_steps

from attn_audit import models
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


def test_every_layer_stack_of_a_two_tower_model_is_randomised_from_its_top():
    """CLIP: the projections are the head; step layer.i takes the i-th layer from the top of both towers (the
    shallower tower runs out first); both towers' embeddings come last."""
    model = models.load("builtin:fashion-clip", device="cpu").model
    steps = dict(randomization_steps(model))
    towers = sorted([model.vision_model.encoder.layers, model.text_model.encoder.layers], key=len)
    depth = len(towers[1])
    assert list(steps) == ["head", *(f"layer.{i}" for i in reversed(range(depth))), "embeddings"]
    assert {id(m) for m in steps["head"]} == {id(model.visual_projection), id(model.text_projection)}
    assert {id(m) for m in steps[f"layer.{depth - 1}"]} == {id(towers[0][-1]), id(towers[1][-1])}
    assert [id(m) for m in steps["layer.0"]] == [id(towers[1][0])] and len(towers[0]) < depth
    assert {id(m) for m in steps["embeddings"]} == {id(model.vision_model.embeddings),
                                                     id(model.text_model.embeddings)}
