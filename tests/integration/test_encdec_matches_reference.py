"""Encoder–decoder adapters (DETR, ViT captioner, BART, T5) on tiny random-weight models.

The reference here explains ONE target of ONE sample at a time, as SPEC §1.7 states it: its own forward pass
(a lone, unpadded sample; for a generated token only the tokens before it are fed to the decoder),
`.retain_grad()` + `backward()` on that target's logit, then float64 full-matrix rules with explicit loops
(tests/reference/rules.py, which does not use models/engine).
"""

import json

import numpy as np
import pytest
import torch

from attn_audit import models
from tests import tiny_encdec
from tests.reference import rules

TOL = 1e-5


def samples_of(kind, n=3):
    return tiny_encdec.images(n, 32) if kind == "captioner" else tiny_encdec.texts(n)


def _events(out, encoder, decoder):
    """(kind, query, key, A, dA) in model order; a map with no gradient (DETR's first decoder
    self-attention: its queries start at zero) contributes Ā = 0."""
    def pair(a):
        return a[0], torch.zeros_like(a[0]) if a.grad is None else a.grad[0]

    steps = [("self", encoder, encoder, *pair(a)) for a in out.encoder_attentions]
    for self_attn, cross in zip(out.decoder_attentions, out.cross_attentions):
        steps += [("self", decoder, decoder, *pair(self_attn)), ("cross", decoder, encoder, *pair(cross))]
    return steps


def _relevancy(out, score, encoder, decoder):
    maps = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
    for a in maps:
        if a.requires_grad:
            a.retain_grad()
    score.backward()
    steps = _events(out, encoder, decoder)
    events = [{"kind": kind, "query": q, "key": k, "block": b, "abar": rules.grad_weighted(a, da)}
              for b, (kind, q, k, a, da) in enumerate(steps)]
    sizes = {encoder: steps[0][3].shape[-1], decoder: steps[-1][3].shape[-2]}
    return rules.chefer_relevancy(events, sizes)


def reference_detection(model, pixels, query, cls):
    """Row of R^{query, image} for one detection of one image (SPEC Eqs. 6, 7, 10)."""
    with torch.enable_grad():
        out = model(pixel_values=pixels, output_attentions=True)
        R = _relevancy(out, out.logits[0, query, cls], "image", "query")
    return R[("query", "image")][query]


def reference_token(model, encoder_inputs, generated, position, source):
    """(row over the source, row over the decoder tokens 0..position) for generated token position + 1."""
    with torch.enable_grad():
        out = model(**encoder_inputs, decoder_input_ids=generated[:, :position + 1], output_attentions=True)
        R = _relevancy(out, out.logits[0, position, generated[0, position + 1]], source, "target")
    own = R[("target", "target")][position].clone()
    own[position] = 0.0  # SPEC 1.8: the readout token's own entry
    return R[("target", source)][position], own


def test_detr_every_detection_matches_the_per_detection_reference():
    m = tiny_encdec.wrapped_detr()
    batch = m.preprocess(tiny_encdec.images(3, 40))
    exps = models.explain(m, batch, method="chefer2021")
    assert 3 < len(exps) < 3 * 6, "some queries above the threshold, not all"
    for exp in exps:
        i = batch.sample_ids.index(exp.sample_id)
        detail = json.loads(exp.target_detail)
        assert detail["query"] == exp.target and detail["class"] == exp.prediction and len(detail["box"]) == 4
        ref = reference_detection(m.model, batch["pixel_values"][i:i + 1], exp.target, exp.prediction)
        assert exp.relevance["image"].shape == (5, 5)
        np.testing.assert_allclose(exp.relevance["image"].ravel(), ref.float().numpy(), atol=TOL,
                                   err_msg=f"{exp.sample_id} query {exp.target}")
        assert exp.relevance["image"].max() > 0


@pytest.mark.parametrize("kind", ["captioner", "bart", "t5"])
def test_every_generated_token_matches_the_per_token_reference(kind):
    m = tiny_encdec.wrapped_generator(kind)
    samples = samples_of(kind)
    batch = m.preprocess(samples)
    exps = models.explain(m, batch, method="chefer2021")
    source = m.adapter.source
    assert len({e.sample_id for e in exps}) == 3 and len(exps) > 3
    for exp in exps:
        single = m.preprocess([samples[batch.sample_ids.index(exp.sample_id)]])
        inputs = m.adapter.encoder_inputs(single)
        generated = m.model.generate(**inputs, do_sample=False, max_new_tokens=tiny_encdec.MAX_NEW_TOKENS)
        k = exp.target  # generated token k (0-based) is scored at decoder position k
        assert int(generated[0, k + 1]) == exp.prediction, "the token explained is the one generated alone"
        ref_source, ref_target = reference_token(m.model, inputs, generated, k, source)
        got = exp.relevance[source].ravel()
        if source == "image":
            ref_source = ref_source[1:]  # [CLS] is not a patch
        np.testing.assert_allclose(got, ref_source.float().numpy(), atol=TOL, err_msg=f"{kind} {exp.sample_id} {k}")
        np.testing.assert_allclose(exp.relevance[m.adapter.target], ref_target.float().numpy(), atol=TOL)
        assert exp.tokens[m.adapter.target][0] == m.adapter.tokenizer.convert_ids_to_tokens(int(generated[0, 0]))
        assert exp.special[m.adapter.target][0]  # the start token


@pytest.mark.parametrize("kind", ["detr", "captioner", "bart", "t5"])
def test_all_targets_in_one_pass_equal_one_target_per_pass(kind, monkeypatch):
    m = tiny_encdec.wrapped_detr() if kind == "detr" else tiny_encdec.wrapped_generator(kind)
    batch = m.preprocess(tiny_encdec.images(3, 40) if kind == "detr" else samples_of(kind))
    methods = models.default_methods()
    together = models.explain(m, batch, method=methods)
    select = m.adapter.own_targets
    n_targets = len(together) // len(methods)
    for t in range(n_targets):
        monkeypatch.setattr(m.adapter, "own_targets", lambda b, logits, t=t: select(b, logits).take([t]))
        alone = [e for e in models.explain(m, batch, method=methods) if e.ok and e.target is not None]
        assert len(alone) == len(methods)
        for exp in alone:
            same = [e for e in together if (e.sample_id, e.target, e.method) == (exp.sample_id, exp.target, exp.method)]
            assert len(same) == 1 and same[0].target_detail == exp.target_detail
            for modality, rel in exp.relevance.items():
                np.testing.assert_allclose(same[0].relevance[modality], rel, atol=TOL,
                                           err_msg=f"{kind} {exp.method} target {t} {modality}")
