"""LLaVA (tiny random CLIP tower + projector + Llama, tests/tiny_llava.py): every generated token against the
per-token float64 reference (tests/reference/llava.py), eager and fused, with the stock processor's inputs; batched +
left-padded = per sample; forced decoding of the greedy continuation = generation; tower layers above the feature
layer change nothing; perturbation curves (prompt tokens, image patches dropped or zeroed) against the stock model on
the reduced input; bad input."""

import io
import json

import numpy as np
import pytest
import torch
from attn_audit.models.perturbation import perturbation_curves

from attn_audit import models
from tests import tiny_llava, tiny_lm
from tests.reference.llava import reference_token

TOL = 1e-5
IMAGE_STEPS = [0.0, 0.25, 0.5, 0.9]
TEXT_STEPS = [0.0, 0.5, 1.0]
PICTURE = tiny_llava.samples(1)[0]["image"]


def _pixels(image):
    return tiny_llava.image_processor()(image, return_tensors="pt")["pixel_values"][0]


def _stock(m, sample):
    """(the stock LlavaProcessor's input_ids followed by the stock model's own greedy continuation, the prompt's
    length, the processor's pixel_values)."""
    enc = tiny_llava.processor(m.adapter.tokenizer, m.model.config)(
        images=sample["image"], text=tiny_llava.stock_prompt(sample["text"]), return_tensors="pt")
    ids, pixels = enc["input_ids"][0].tolist(), enc["pixel_values"][0]
    with torch.no_grad():
        out = m.model.generate(input_ids=torch.tensor([ids]), pixel_values=pixels[None], do_sample=False, num_beams=1)
    row = out[0, len(ids):].tolist()
    return ids + (row[:row.index(tiny_lm.EOS)] if tiny_lm.EOS in row else row), len(ids), pixels


@pytest.mark.parametrize("capture, strategy, layer, tower", [
    ("eager", "default", -2, "clip"), ("fused", "default", -2, "clip"), ("eager", "full", -1, "clip"),
    ("fused", "full", 1, "clip"), ("eager", "full", -1, "siglip"), ("fused", "full", -2, "siglip")])
def test_every_generated_token_matches_the_per_token_reference(capture, strategy, layer, tower):
    m = tiny_llava.wrapped(capture, strategy, layer, tower=tower)
    samples = tiny_llava.samples(3)
    batch = m.preprocess(samples)
    assert batch["attention_mask"][:, 0].tolist().count(0) == 2, "left-padded"
    exps = models.explain(m, batch, method="chefer2021")
    assert len(exps) > 3 and all(e.ok for e in exps)
    image_id = m.model.config.image_token_id
    stock = {s["id"]: _stock(m, s) for s in samples}
    for exp in exps:
        ids, prompt, pixels = stock[exp.sample_id]
        detail = json.loads(exp.target_detail)
        p = detail["position"]
        assert p == prompt + exp.target and detail["token_id"] == ids[p] == exp.prediction
        text, image, logit, logprob = reference_token(m.model, pixels, ids, p)
        assert exp.score == pytest.approx(logit, abs=1e-4) and detail["logprob"] == pytest.approx(logprob, abs=1e-5)
        words = [t for t in ids[:p] if t != image_id]
        assert exp.tokens["text"] == m.adapter.tokenizer.convert_ids_to_tokens(words)
        assert exp.special["text"].tolist() == [t == tiny_lm.BOS for t in words]
        assert exp.relevance["image"].shape == (tiny_llava.GRID, tiny_llava.GRID) and float(image.abs().max()) > 1e-3
        np.testing.assert_allclose(exp.relevance["text"], text.numpy(), atol=TOL, err_msg=f"{exp.sample_id} text")
        np.testing.assert_allclose(exp.relevance["image"].ravel(), image.numpy(), atol=TOL,
                                   err_msg=f"{exp.sample_id} token {exp.target} image")


def test_a_prompt_that_ends_with_its_image_is_read_at_an_image_position():
    m = tiny_llava.wrapped()
    sample = {"id": "end", "image": PICTURE, "text": f"the cat {tiny_llava.IMAGE}"}
    exps = models.explain(m, m.preprocess([sample]), method="chefer2021")
    ids, _, pixels = _stock(m, sample)
    assert exps[0].tokens["text"] == ["<s>", "the", "cat"]  # the readout position p − 1 is an image token
    for exp in exps:
        text, image, _, _ = reference_token(m.model, pixels, ids, json.loads(exp.target_detail)["position"])
        np.testing.assert_allclose(exp.relevance["text"], text.numpy(), atol=TOL)
        np.testing.assert_allclose(exp.relevance["image"].ravel(), image.numpy(), atol=TOL)


@pytest.mark.parametrize("capture", ["eager", "fused"])
def test_batched_and_left_padded_equals_one_sample_at_a_time(capture):
    m = tiny_llava.wrapped(capture)
    tiny_lm.assert_batched_equals_alone(m, tiny_llava.samples(4), models.default_methods(), ("text", "image"), TOL)


def test_forced_decoding_of_the_greedy_continuation_equals_generation():
    m = tiny_llava.wrapped()
    samples, methods = tiny_llava.samples(3), ["chefer2021", "rollout"]
    generated = models.explain(m, m.preprocess(samples), method=methods)
    said = {e.sample_id: json.loads(e.target_detail)["continuation"] for e in generated}
    forced = [{**s, "target": said[s["id"]]} for s in samples]
    again = models.explain(m, m.preprocess([forced[0], samples[1], forced[2]]), method=methods)
    assert len(again) == len(generated)
    for g, f in zip(generated, again):
        dg, df = json.loads(g.target_detail), json.loads(f.target_detail)
        assert df.pop("forced") == (f.sample_id != "s1") and not dg.pop("forced")
        dg.pop("note", None), df.pop("note", None)
        assert dg.pop("logprob") == pytest.approx(df.pop("logprob"), abs=TOL)
        assert (g.sample_id, g.target, g.prediction) == (f.sample_id, f.target, f.prediction) and dg == df
        for modality in ("text", "image"):
            np.testing.assert_allclose(f.relevance[modality], g.relevance[modality], atol=TOL)


def test_tower_layers_above_the_feature_layer_change_nothing():
    samples, methods = tiny_llava.samples(2), models.default_methods()
    m = tiny_llava.wrapped()  # vision_feature_layer -2: the tower's last layer is never used
    before = models.explain(m, m.preprocess(samples), method=methods)
    with torch.no_grad():
        for p in m.model.model.vision_tower.encoder.layers[-1].parameters():
            p.normal_(0, 1.0)
    after = models.explain(m, m.preprocess(samples), method=methods)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        for modality in ("text", "image"):
            np.testing.assert_allclose(b.relevance[modality], a.relevance[modality], atol=TOL, err_msg=a.method)


def test_a_processor_output_is_explained_as_its_samples():
    m = tiny_llava.wrapped()
    samples = tiny_llava.samples(3)
    processor = tiny_llava.processor(m.adapter.tokenizer, m.model.config)
    inputs = processor(images=[s["image"] for s in samples], text=[tiny_llava.stock_prompt(s["text"]) for s in samples],
                       padding=True, return_tensors="pt")
    own = models.explain(m, inputs, method="chefer2021")
    ours = models.explain(m, m.preprocess(samples), method="chefer2021")
    assert [e.target_detail for e in own] == [e.target_detail for e in ours]
    for a, b in zip(own, ours):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.relevance["text"], b.relevance["text"], atol=TOL)
        np.testing.assert_allclose(a.relevance["image"], b.relevance["image"], atol=TOL)


# -- perturbation: every curve entry against the stock model on the reduced input
def _order(values, positions, direction):
    return sorted(positions, key=lambda j: (-values[j] if direction == "positive" else values[j], j))


def _removed(order, fraction):
    return set(order[:int(np.floor(fraction * len(order) + 1e-9))])


def _perturbation_setup(m, modality, seed):
    """(samples by id, their batch, explanations, a random map per explanation, stock inputs by sample id)."""
    samples = tiny_llava.samples(3)
    batch = m.preprocess(samples)
    exps = models.explain(m, batch, method="chefer2021")
    rng = np.random.default_rng(seed)  # random maps: every removal order is exercised, not only the method's
    maps = [rng.standard_normal(e.relevance[modality].size) for e in exps]
    return {s["id"]: s for s in samples}, batch, exps, maps, {s["id"]: _stock(m, s) for s in samples}


def _stock_logits(m, ids, pixels):
    with torch.no_grad():
        return m.model(input_ids=torch.tensor([ids]), pixel_values=pixels[None]).logits[0, -1]


def test_every_text_perturbation_entry_equals_the_stock_model_on_the_reduced_prompt():
    m = tiny_llava.wrapped()
    samples, batch, exps, maps, stock = _perturbation_setup(m, "text", 1)
    curves = perturbation_curves(m, batch, "text", maps, [e.prediction for e in exps], TEXT_STEPS, max_rows=7,
                                 samples=[batch.sample_ids.index(e.sample_id) for e in exps],
                                 positions=[e.target for e in exps])
    image_id = m.model.config.image_token_id
    for e, exp in enumerate(exps):
        ids, prompt, pixels = stock[exp.sample_id]
        p = json.loads(exp.target_detail)["position"]
        stream = [j for j in range(p) if ids[j] != image_id]  # text map position -> stream position
        words = [k for k, j in enumerate(stream) if j < prompt and ids[j] != tiny_lm.BOS]
        assert curves.probability[e, 0, 0] == pytest.approx(exp.probability, abs=1e-5)
        for d, direction in enumerate(curves.directions):
            for s, fraction in enumerate(TEXT_STEPS):
                removed = {stream[k] for k in _removed(_order(maps[e], words, direction), fraction)}
                logits = _stock_logits(m, [t for j, t in enumerate(ids[:p]) if j not in removed], pixels)
                assert curves.score[e, d, s] == pytest.approx(logits[exp.prediction].item(), abs=1e-4)
                assert curves.prediction[e, d, s] == int(logits.argmax())


def test_every_zeroed_patch_entry_equals_the_stock_model_on_the_blacked_out_image():
    m = tiny_llava.wrapped()
    samples, batch, exps, maps, stock = _perturbation_setup(m, "image", 2)
    curves = perturbation_curves(m, batch, "image", maps, [e.prediction for e in exps], IMAGE_STEPS, mode="zero",
                                 samples=[batch.sample_ids.index(e.sample_id) for e in exps],
                                 positions=[e.target for e in exps])
    size = tiny_llava.PATCH
    for e, exp in enumerate(exps):
        ids, _, _ = stock[exp.sample_id]
        p = json.loads(exp.target_detail)["position"]
        for d, direction in enumerate(curves.directions):
            for s, fraction in enumerate(IMAGE_STEPS):
                image = np.asarray(samples[exp.sample_id]["image"]).copy()
                for j in _removed(_order(maps[e], range(tiny_llava.GRID ** 2), direction), fraction):
                    r, c = divmod(j, tiny_llava.GRID)  # black before the processor's normalisation
                    image[r * size:(r + 1) * size, c * size:(c + 1) * size] = 0
                logits = _stock_logits(m, ids[:p], _pixels(image))
                assert curves.score[e, d, s] == pytest.approx(logits[exp.prediction].item(), abs=1e-4)


@pytest.mark.parametrize("strategy", ["default", "full"])
def test_every_dropped_patch_entry_equals_the_stock_model_without_those_tokens(strategy):
    m = tiny_llava.wrapped(strategy=strategy)
    _, batch, exps, maps, stock = _perturbation_setup(m, "image", 3)
    curves = perturbation_curves(m, batch, "image", maps, [e.prediction for e in exps], IMAGE_STEPS, mode="drop",
                                 max_rows=5, samples=[batch.sample_ids.index(e.sample_id) for e in exps],
                                 positions=[e.target for e in exps])
    embeddings = m.model.model.vision_tower.embeddings
    image_id = m.model.config.image_token_id
    for e, exp in enumerate(exps):
        ids, _, pixels = stock[exp.sample_id]
        p = json.loads(exp.target_detail)["position"]
        image_positions = [j for j in range(p) if ids[j] == image_id]
        image_positions = image_positions[1:] if strategy == "full" else image_positions  # patch k's token
        for d, direction in enumerate(curves.directions):
            for s, fraction in enumerate(IMAGE_STEPS):
                removed = _removed(_order(maps[e], range(tiny_llava.GRID ** 2), direction), fraction)
                kept = [0, *(1 + k for k in range(tiny_llava.GRID ** 2) if k not in removed)]  # [CLS] stays
                handle = embeddings.register_forward_hook(lambda _m, _i, out, kept=kept: out[:, kept])
                try:
                    gone = {image_positions[k] for k in removed}
                    logits = _stock_logits(m, [t for j, t in enumerate(ids[:p]) if j not in gone], pixels)
                finally:
                    handle.remove()
                assert curves.score[e, d, s] == pytest.approx(logits[exp.prediction].item(), abs=1e-4)
                assert curves.prediction[e, d, s] == int(logits.argmax())


def test_image_tokens_are_flagged_specials_never_removed_as_text():
    m = tiny_llava.wrapped()
    batch = m.preprocess([{"id": "c", "image": PICTURE, "text": "the cat sat", "chat": True}])
    exp = models.explain(m, batch, method="chefer2021")[0]
    assert exp.tokens["text"][:5] == ["<|user|>", "the", "cat", "sat", "<|assistant|>"]  # the image went first
    assert exp.special["text"][:5].tolist() == [True, False, False, False, True]
    assert m.adapter.removable_tokens(batch, "text")[0, :5].tolist() == [False, True, True, True, False]
    assert m.adapter.removable_tokens(batch, "image").shape == (1, tiny_llava.GRID ** 2)


# -- bad input
def _corrupt_png() -> bytes:
    buffer = io.BytesIO()
    PICTURE.save(buffer, format="PNG")
    return buffer.getvalue()[:60]


@pytest.mark.parametrize("sample, message", [
    ({"text": "the cat"}, "needs an 'image' and a 'text'"),
    ({"image": b"not an image", "text": "the cat"}, "cannot decode image"),
    ({"image": _corrupt_png(), "text": "the cat"}, "cannot decode image"),
    ({"image": "/no/such/file.png", "text": "the cat"}, "image file not found"),
    ({"image": PICTURE, "text": ""}, "prompt is empty"),
    ({"image": PICTURE, "text": " \u200b "}, "prompt is empty"),
    ({"image": PICTURE, "text": tiny_llava.IMAGE}, "special tokens only"),
    ({"image": PICTURE, "text": f"{tiny_llava.IMAGE} the {tiny_llava.IMAGE}"}, "names 2 images"),
    ({"image": PICTURE, "text": "the cat", "target": f"sat {tiny_llava.IMAGE}"}, "continuation holds the image"),
    ({"image": PICTURE, "prompt": "the cat"}, "needs a 'text'"),
])
def test_bad_samples_are_named_and_their_neighbours_explained(sample, message):
    m = tiny_llava.wrapped()
    batch = m.preprocess([{"id": "bad", **sample}, *tiny_llava.samples(1)], errors="collect")
    exps = models.explain(m, batch, method="chefer2021")
    assert exps[0].sample_id == "bad" and message in exps[0].error
    assert len(exps) > 1 and all(e.ok and e.sample_id == "s0" for e in exps[1:])


def test_truncation_that_would_cut_the_image_is_refused():
    m = tiny_llava.wrapped(truncate=True)
    long_before = {"id": "kept", "image": PICTURE, "text": "the " * 30 + tiny_llava.IMAGE + " cat"}
    long_after = {"id": "cut", "image": PICTURE, "text": tiny_llava.IMAGE + " cat" + " the" * 30}
    batch = m.preprocess([long_before, long_after], errors="collect")  # truncation keeps the last tokens
    assert [f.sample_id for f in batch.failures] == ["cut"] and "would lose image tokens" in batch.failures[0].message
    exps = models.explain(m, batch, method="chefer2021")
    assert exps[1].tokens["text"][:2] == ["the", "the"] and "prompt truncated to its last 43 tokens" in exps[1].note
    with pytest.raises(models.SampleError, match="pass truncate=True"):
        tiny_llava.wrapped().preprocess([long_before])


def test_unsupported_configurations_are_refused():
    model, tok = tiny_llava.llava()
    model.config.vision_feature_layer = [-2, -1]
    with pytest.raises(models.UnsupportedModelError, match="vision_feature_layer list"):
        models.wrap(model, tokenizer=tok, device="cpu")
    with pytest.raises(models.UnsupportedModelError, match="'default' drops a \\[CLS\\] token"):
        models.wrap(tiny_llava.llava(tower="siglip")[0], tokenizer=tok, device="cpu")
    with pytest.raises(ValueError, match="needs its tokenizer"):
        models.wrap(tiny_llava.llava()[0], device="cpu")


def test_load_reads_a_llava_folder(tmp_path):
    model, tok = tiny_llava.llava()
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    tiny_llava.image_processor().save_pretrained(tmp_path)  # preprocessor_config.json, as on the hub
    m = models.load(str(tmp_path), device="cpu", capture="eager")
    assert m.adapter.family == "llava" and m.adapter.transform.mean == pytest.approx(tiny_llava.MEAN)
    samples = tiny_llava.samples(2)
    loaded = models.explain(m, m.preprocess(samples), method="chefer2021")
    wrapped = models.explain(tiny_llava.wrapped(), tiny_llava.wrapped().preprocess(samples), method="chefer2021")
    assert [e.target_detail for e in loaded] == [e.target_detail for e in wrapped]
    for a, b in zip(loaded, wrapped):
        np.testing.assert_allclose(a.relevance["image"], b.relevance["image"], atol=TOL)
