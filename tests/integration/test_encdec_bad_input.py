"""Bad input and edge cases of many-target models: reported as notes or clear errors, never a crash."""

import json

import numpy as np
import pytest
import torch

from attn_audit import models
from tests import tiny_encdec


def detr(threshold):
    return models.wrap(tiny_encdec.detr(), device="cpu", transform=tiny_encdec.DETR_TRANSFORM, threshold=threshold)


def test_an_image_with_no_detections_is_a_note_and_its_neighbours_are_unaffected():
    m = detr(tiny_encdec.DETR_THRESHOLD)
    images = tiny_encdec.images(3, 40)
    blank = {**tiny_encdec.images(8, 40, seed=5)[7], "id": "blank"}  # an image the model finds nothing in
    with torch.no_grad():
        best = torch.softmax(m.model(**m.preprocess([blank])).logits, -1)[..., :-1].max()
    assert best < m.adapter.threshold
    alone = models.explain(m, m.preprocess(images), method=["chefer2021", "rollout"])
    mixed = models.explain(m, m.preprocess([images[0], blank, *images[1:]]), method=["chefer2021", "rollout"])
    noted = [e for e in mixed if e.sample_id == "blank"]
    assert [e.method for e in noted] == ["chefer2021", "rollout"]
    assert all(e.ok and e.target is None and not e.relevance and "no detections" in e.note for e in noted)
    assert json.loads(noted[0].target_detail)["note"] == noted[0].note
    others = [e for e in mixed if e.sample_id != "blank"]
    assert [(e.sample_id, e.target, e.method) for e in others] == [(e.sample_id, e.target, e.method) for e in alone]
    for a, b in zip(alone, others):
        assert a.relevance.keys() == b.relevance.keys()
        for modality in a.relevance:
            np.testing.assert_allclose(b.relevance[modality], a.relevance[modality], atol=1e-5)


def test_a_batch_without_any_detection_gives_notes_only():
    exps = models.explain(detr(1.0), detr(1.0).preprocess(tiny_encdec.images(2, 40)), method="chefer2021")
    assert [e.sample_id for e in exps] == ["img0", "img1"] and all(e.note and not e.relevance for e in exps)


def test_generation_hitting_the_length_limit_is_noted_on_its_tokens_only():
    model, tok = tiny_encdec.bart()
    samples = tiny_encdec.texts(4)
    first = models.wrap(model, tokenizer=tok, device="cpu")
    with torch.no_grad():
        generated = model.generate(**first.adapter.encoder_inputs(first.preprocess(samples)), do_sample=False)
    # Make the third token of the first output the end token: that sample ends, the others run to the limit.
    model.generation_config.eos_token_id = int(generated[0, 3])
    ended = {s["id"] for s, g in zip(samples, generated.tolist()) if int(generated[0, 3]) in g[1:]}
    assert "txt0" in ended and len(ended) < len(samples)
    m = models.wrap(model, tokenizer=tok, device="cpu")
    exps = models.explain(m, m.preprocess(samples), method="chefer2021")
    for exp in exps:
        assert exp.ok
        if exp.sample_id in ended:
            assert exp.note is None or "no token" in exp.note
        else:
            assert "length limit (6 new tokens)" in exp.note and json.loads(exp.target_detail)["note"] == exp.note
    assert max(e.target for e in exps if e.sample_id not in ended) == tiny_encdec.MAX_NEW_TOKENS - 1


def test_many_target_models_refuse_a_target_and_name_bad_samples():
    m = detr(0.5)
    with pytest.raises(models.AttnAuditError, match="every target they produce"):
        models.explain(m, m.preprocess(tiny_encdec.images(1, 40)), target=0)
    with pytest.raises(models.SampleError, match=r"'q'.*needs an 'image'"):
        m.preprocess([{"id": "q", "text": "a cat"}])
    model, tok = tiny_encdec.t5()
    t5 = models.wrap(model, tokenizer=tok, device="cpu")
    batch = t5.preprocess([{"id": "e", "text": "  "}, *tiny_encdec.texts(1)], errors="collect")
    exps = models.explain(t5, batch)
    assert exps[0].sample_id == "e" and "empty" in exps[0].error and all(e.sample_id == "txt0" for e in exps[1:])
