"""Batched perturbation forward passes equal the stock model run one sample at a time on the reduced input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attn_audit.models.perturbation import perturbation_curves

from attn_audit import models
from tests import tiny_models

IMAGE_STEPS = [0.0, 0.25, 0.5, 0.75, 1.0]  # 16 patches: 0, 4, 8, 12, 16 removed
TEXT_STEPS = [0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]


@pytest.fixture(scope="module")
def vit():
    return tiny_models.wrapped("vit")


@pytest.fixture(scope="module")
def bert():
    return tiny_models.wrapped("bert")


def _maps(n_samples, n_tokens, seed=1):
    return list(np.random.default_rng(seed).standard_normal((n_samples, n_tokens)).astype(np.float32))


def _removed_sets(rel, steps, direction):
    """Reference order by hand: positions sorted by relevance (ties: lower index), first floor(p·n) removed."""
    idx = sorted(range(len(rel)), key=lambda j: (-rel[j] if direction == "positive" else rel[j], j))
    return [set(idx[:int(np.floor(p * len(rel) + 1e-9))]) for p in steps]


def _vit_reference_drop(model, pixels, kept_patches):
    """The stock modules one sample at a time: embeddings → kept tokens → layers → layernorm → classifier."""
    with torch.no_grad():
        h = model.vit.embeddings(pixels[None])
        h = h[:, [0, *[1 + j for j in kept_patches]]]
        for layer in model.vit.layers:
            h = layer(h)
        return model.classifier(model.vit.layernorm(h)[:, 0])[0]


def test_vit_drop_batched_equals_per_sample_stock_forward(vit):
    samples = tiny_models.images(3)
    batch = vit.preprocess(samples)
    maps = _maps(3, 16)
    targets = [0, 1, 2]
    curves = perturbation_curves(vit, batch, "image", maps, targets, IMAGE_STEPS, mode="drop", max_rows=7)
    for e in range(3):
        for d, direction in enumerate(curves.directions):
            for s, removed in enumerate(_removed_sets(maps[e], IMAGE_STEPS, direction)):
                kept = [j for j in range(16) if j not in removed]
                logits = _vit_reference_drop(vit.model, batch["pixel_values"][e], kept)
                prob = torch.softmax(logits, -1)[targets[e]].item()
                assert curves.probability[e, d, s] == pytest.approx(prob, abs=1e-5)
                assert curves.score[e, d, s] == pytest.approx(logits[targets[e]].item(), abs=1e-4)
                assert curves.prediction[e, d, s] == int(logits.argmax())
    assert curves.removed[0].tolist() == [0, 4, 8, 12, 16]  # p = 1: only [CLS] is left, and it is defined


def test_vit_zero_equals_stock_model_on_blacked_out_image(vit):
    samples = tiny_models.images(2, seed=3)
    batch = vit.preprocess(samples)
    maps = _maps(2, 16, seed=4)
    curves = perturbation_curves(vit, batch, "image", maps, [1, 1], IMAGE_STEPS, mode="zero")
    for e, sample in enumerate(samples):
        for d, direction in enumerate(curves.directions):
            for s, removed in enumerate(_removed_sets(maps[e], IMAGE_STEPS, direction)):
                image = sample["image"].copy()
                for j in removed:  # black in [0, 255] before the checkpoint's normalisation: the reference protocol
                    r, c = divmod(j, 4)
                    image[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 0
                with torch.no_grad():
                    logits = vit.model(**vit.preprocess([{"image": image}])).logits[0]
                assert curves.probability[e, d, s] == pytest.approx(torch.softmax(logits, -1)[1].item(), abs=1e-5)


def test_p0_equals_unperturbed_prediction(vit, bert):
    deit = tiny_models.wrapped("deit")  # two special tokens: [CLS] and distillation
    for m, samples, modality in ((vit, tiny_models.images(4), "image"), (deit, tiny_models.images(2), "image"),
                                 (bert, tiny_models.texts(4), "text")):
        batch = m.preprocess(samples)
        exps = models.explain(m, batch, "chefer2021")
        curves = perturbation_curves(m, batch, modality, [x.relevance[modality] for x in exps],
                                     [x.target for x in exps], [0.0, 0.5])
        for e, x in enumerate(exps):
            assert curves.prediction[e, :, 0].tolist() == [x.prediction] * 2
            assert curves.probability[e, :, 0] == pytest.approx([x.probability] * 2, abs=1e-5)


def test_text_drop_equals_tokenising_the_reduced_text(bert):
    samples = tiny_models.texts(5)  # different lengths: the batch is padded
    batch = bert.preprocess(samples)
    lengths = batch.meta["lengths"]
    maps = [np.random.default_rng(i).standard_normal(n).astype(np.float32) for i, n in enumerate(lengths)]
    targets = [2, 0, 1, 2, 0]
    curves = perturbation_curves(bert, batch, "text", maps, targets, TEXT_STEPS, max_rows=11)
    for e, sample in enumerate(samples):
        words = sample["text"].split()  # every tiny word is one token: map position j + 1 is word j
        assert len(words) == lengths[e] - 2
        for d, direction in enumerate(curves.directions):
            inner = maps[e][1:-1]  # [CLS] and [SEP] are never removed
            for s, removed in enumerate(_removed_sets(inner, TEXT_STEPS, direction)):
                text = " ".join(w for j, w in enumerate(words) if j not in removed)
                with torch.no_grad():
                    logits = bert.model(**bert.adapter.encoder.tokenizer(text, return_tensors="pt")).logits[0]
                prob = torch.softmax(logits, -1)[targets[e]].item()
                assert curves.probability[e, d, s] == pytest.approx(prob, abs=1e-5), (e, direction, s)
        assert curves.removed[e, -1] == lengths[e] - 2  # p = 1: only [CLS] [SEP] left, still defined


def test_several_explanations_of_one_sample_and_bad_mode(vit, bert):
    batch = vit.preprocess(tiny_models.images(1))
    maps = _maps(2, 16)
    curves = perturbation_curves(vit, batch, "image", maps, [0, 2], [0.0, 0.5], samples=[0, 0])
    assert curves.probability.shape == (2, 2, 2)
    with pytest.raises(models.AttnAuditError, match="not 'zero'"):
        perturbation_curves(bert, bert.preprocess(tiny_models.texts(1)), "text", [np.zeros(4)], [0], [0.0],
                            mode="zero")
    with pytest.raises(models.AttnAuditError, match="does not match"):
        perturbation_curves(vit, batch, "image", [np.zeros(9)], [0], [0.0])
