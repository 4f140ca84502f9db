"""Perturbation tests over the encoder tokens of encoder–decoder models (SPEC §3): every batched pass equals the
stock model run one sample and one target at a time on the reduced input, scored at the target's own position."""

import numpy as np
import pytest
import torch
from attn_audit.models.perturbation import perturbation_curves
from attn_audit.tasks.evaluate import EvalSettings
from attn_audit.tasks.evaluate.notes import Notes
from attn_audit.tasks.evaluate.perturbation_job import perturbation_rows
from attn_audit.tasks.evaluate.rows import curve_rows, metric_rows

from attn_audit import models
from tests import tiny_encdec

STEPS = [0.0, 0.25, 0.5, 0.75, 1.0]


def _removed_sets(rel, steps, direction, removable):
    """Reference order by hand: the removable positions sorted by relevance (ties: lower index), the first
    floor(p·n) of them removed."""
    idx = sorted(removable, key=lambda j: (-rel[j] if direction == "positive" else rel[j], j))
    return [set(idx[:int(np.floor(p * len(idx) + 1e-9))]) for p in steps]


def _explained(m, samples, modality):
    batch = m.preprocess(samples)
    exps = [x for x in models.explain(m, batch, method="chefer2021") if x.ok]
    assert len({x.sample_id for x in exps}) == len(samples) and len(exps) > len(samples)  # several targets each
    rng = np.random.default_rng(1)  # random maps: every removal order is exercised, not only the method's
    maps = [rng.standard_normal(np.asarray(x.relevance[modality]).size) for x in exps]
    curves = perturbation_curves(m, batch, modality, maps, [x.prediction for x in exps], STEPS, max_rows=5,
                                 samples=[batch.sample_ids.index(x.sample_id) for x in exps],
                                 positions=[x.target for x in exps], mode="zero" if m.adapter.family == "detr"
                                 else "drop")
    return batch, exps, maps, curves


def _generated(m, batch):
    """The greedy sequences the explanations were made on (the decoder input of every reference pass)."""
    inputs = {k: v for k, v in batch.items() if k in ("pixel_values", "input_ids", "attention_mask")}
    return m.model.generate(**inputs, do_sample=False, num_beams=1)


def _check(curves, exps, maps, e, reference, removable=None):
    """Curve entries of explanation e against `reference(removed positions) -> logits (n_classes,)`; every map
    position is removable unless `removable` says which are."""
    exp = exps[e]
    assert curves.probability[e, :, 0] == pytest.approx([exp.probability] * 2, abs=1e-5)  # nothing removed
    removable = range(len(maps[e])) if removable is None else removable
    for d, direction in enumerate(curves.directions):
        for s, removed in enumerate(_removed_sets(maps[e], STEPS, direction, removable)):
            logits = reference(removed)
            assert curves.score[e, d, s] == pytest.approx(logits[exp.prediction].item(), abs=1e-4)
            assert curves.probability[e, d, s] == pytest.approx(torch.softmax(logits, -1)[exp.prediction].item(),
                                                                abs=1e-5)
            assert curves.prediction[e, d, s] == int(logits.argmax())


def test_captioner_drop_equals_decoder_on_the_kept_patches():
    m = tiny_encdec.wrapped_generator("captioner")
    batch, exps, maps, curves = _explained(m, tiny_encdec.images(3, 32), "image")
    model, generated = m.model, _generated(m, batch)
    for e, exp in enumerate(exps):
        i = batch.sample_ids.index(exp.sample_id)

        def reference(removed, i=i, exp=exp):
            kept = [0, *[1 + j for j in range(16) if j not in removed]]  # [CLS] always stays
            with torch.no_grad():
                h = model.encoder.embeddings(batch["pixel_values"][i:i + 1])[:, kept]
                for layer in model.encoder.layers:
                    h = layer(h)
                encoded = model.encoder.layernorm(h)
                out = model(encoder_outputs=(encoded,), decoder_input_ids=generated[i:i + 1, :exp.target + 1])
            return out.logits[0, -1]

        _check(curves, exps, maps, e, reference)
    assert curves.removed[0].tolist() == [0, 4, 8, 12, 16]


def test_captioner_zero_equals_stock_model_on_blacked_out_image():
    m = tiny_encdec.wrapped_generator("captioner")
    samples = tiny_encdec.images(2, 32, seed=5)
    batch = m.preprocess(samples)
    exps = [x for x in models.explain(m, batch, method="rollout") if x.ok]
    maps = [np.random.default_rng(2).standard_normal(16) for _ in exps]
    curves = perturbation_curves(m, batch, "image", maps, [x.prediction for x in exps], STEPS, mode="zero",
                                 samples=[batch.sample_ids.index(x.sample_id) for x in exps],
                                 positions=[x.target for x in exps])
    generated = _generated(m, batch)
    for e, exp in enumerate(exps):
        i = batch.sample_ids.index(exp.sample_id)

        def reference(removed, i=i, exp=exp):
            image = samples[i]["image"].copy()
            for j in removed:  # black in [0, 255] before the checkpoint's normalisation, as for ViT
                r, c = divmod(j, 4)
                image[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 0
            with torch.no_grad():
                out = m.model(**m.preprocess([{"image": image}]),
                              decoder_input_ids=generated[i:i + 1, :exp.target + 1])
            return out.logits[0, -1]

        _check(curves, exps, maps, e, reference)


@pytest.mark.parametrize("kind", ["bart", "t5"])
def test_seq2seq_drop_equals_model_on_the_source_written_without_the_tokens(kind):
    m = tiny_encdec.wrapped_generator(kind)
    samples = tiny_encdec.texts(3)
    batch, exps, maps, curves = _explained(m, samples, "source")
    tok, generated = m.adapter.tokenizer, _generated(m, batch)
    for e, exp in enumerate(exps):
        i = batch.sample_ids.index(exp.sample_id)
        ids = tok(samples[i]["text"])["input_ids"]
        special = set(tok.all_special_ids)
        words = [j for j, t in enumerate(ids) if t not in special]  # removable positions, in map order
        assert [j for j, flag in enumerate(batch.meta["special"][i]) if not flag] == words

        def reference(removed, i=i, exp=exp, ids=ids):
            kept = [t for j, t in enumerate(ids) if j not in removed]
            with torch.no_grad():
                out = m.model(input_ids=torch.tensor([kept]),
                              decoder_input_ids=generated[i:i + 1, :exp.target + 1])
            return out.logits[0, -1]

        _check(curves, exps, maps, e, reference, removable=words)


def test_detr_zero_scores_each_detection_at_its_own_query():
    m = tiny_encdec.wrapped_detr()
    samples = tiny_encdec.images(3, 40)
    batch, exps, maps, curves = _explained(m, samples, "image")
    for e, exp in enumerate(exps):
        i = batch.sample_ids.index(exp.sample_id)

        def reference(removed, i=i, exp=exp):
            image = samples[i]["image"].copy()
            for j in removed:  # a 5 x 5 feature grid over 40 px: each cell covers 8 x 8 pixels
                r, c = divmod(j, 5)
                image[r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = 0
            with torch.no_grad():
                return m.model(**m.preprocess([{"image": image}])).logits[0, exp.target]

        _check(curves, exps, maps, e, reference)


def test_decoder_tokens_are_not_perturbed():
    m = tiny_encdec.wrapped_generator("bart")
    batch = m.preprocess(tiny_encdec.texts(1))
    assert m.adapter.perturbable_modalities == ("source",)
    with pytest.raises(models.UnsupportedModelError, match="generated sequence"):
        m.adapter.removable_tokens(batch, "target")


def test_evaluation_of_detr_blacks_out_pixels_and_says_so():
    """DETR has no "drop" (its sine position embeddings would shift): the evaluation's default image protocol
    becomes "zero", in the store key and the test name; every detection gets its curve."""
    m = tiny_encdec.wrapped_detr()
    samples = {s["id"]: s for s in tiny_encdec.images(3, 40)}
    batch = m.preprocess(list(samples.values()))
    exps = models.explain(m, batch, method="chefer2021")
    curves, metrics, notes = curve_rows(), metric_rows(), Notes()
    settings = EvalSettings().for_modes(m.adapter.perturbation_modes)
    assert settings.perturbation_mode == "zero" and settings.key_part("perturbation").endswith("-zero")
    perturbation_rows(m, batch, samples, exps, "chefer2021", settings, curves, metrics, notes)
    assert not notes
    assert set(curves.columns["perturbation"]) == {"positive_zero", "negative_zero"}
    aucs = [(sid, t) for sid, t, name in zip(metrics.columns["sample_id"], metrics.columns["target_index"],
                                              metrics.columns["metric"]) if name == "auc_positive_zero"]
    assert sorted(aucs) == sorted((x.sample_id, x.target) for x in exps)
