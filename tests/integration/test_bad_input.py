"""Bad input gets a clear error naming the sample or the argument; one bad sample spoils nothing else."""

import json

import numpy as np
import pytest
import torch
import transformers as T
from attn_audit.storage.tables import prediction_table

from attn_audit import models
from tests import tiny_models


@pytest.fixture(scope="module")
def vit():
    return models.wrap(tiny_models.vit(), device="cpu")


@pytest.fixture(scope="module")
def bert():
    model, tok = tiny_models.text_model("bert")
    return models.wrap(model, tokenizer=tok, device="cpu")


def test_text_given_to_an_image_model_names_the_sample(vit):
    with pytest.raises(models.SampleError, match=r"'q1'.*needs an 'image'.*text"):
        vit.preprocess([{"id": "q1", "text": "a cat"}])


def test_image_given_to_a_text_model_names_the_sample(bert):
    with pytest.raises(models.SampleError, match=r"'p7'.*needs a 'text'"):
        bert.preprocess([{"id": "p7", "image": np.zeros((8, 8), np.uint8)}])


def test_unreadable_and_missing_images_are_collected_per_sample(vit, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    samples = [{"id": "ok", "image": np.zeros((32, 32, 3), np.uint8)},
               {"id": "bad", "image": str(broken)},
               {"id": "gone", "image": str(tmp_path / "missing.png")},
               {"id": "nan", "image": np.full((32, 32), np.nan, np.float32)}]
    batch = vit.preprocess(samples, errors="collect")
    assert batch.sample_ids == ["ok"]
    reasons = {f.sample_id: f.message for f in batch.failures}
    assert "cannot decode image" in reasons["bad"]
    assert "not found" in reasons["gone"]
    assert "NaN" in reasons["nan"]
    exps = models.explain(vit, batch)
    assert {e.sample_id: e.ok for e in exps} == {"bad": False, "gone": False, "nan": False, "ok": True}
    with pytest.raises(models.SampleError, match="'bad'.*cannot decode"):
        vit.preprocess(samples[:2])


def test_empty_and_over_long_texts(bert):
    with pytest.raises(models.SampleError, match="'e'.*text is empty"):
        bert.preprocess([{"id": "e", "text": "   "}])
    long = {"id": "long", "text": " ".join(["cat"] * 200)}
    with pytest.raises(models.SampleError, match=r"'long'.*202 tokens.*at most 64.*--truncate"):
        bert.preprocess([long])
    truncating = models.wrap(bert.model, tokenizer=bert.adapter.encoder.tokenizer, device="cpu", truncate=True)
    exp = models.explain(truncating, truncating.preprocess([long]))[0]
    assert exp.ok and len(exp.relevance["text"]) == 64 and "truncated to the model's 64 tokens (it has 202)" in exp.note
    row = prediction_table([exp], "r").to_pylist()[0]  # the note reaches the store with the prediction
    assert json.loads(row["target_detail"]) == {"note": exp.note}


def test_target_out_of_range_names_the_argument_or_the_sample(vit):
    batch = vit.preprocess(tiny_models.images(2))
    with pytest.raises(models.AttnAuditError, match="target 3 is out of range: the model has 3 classes"):
        models.explain(vit, batch, target=3)
    with pytest.raises(models.SampleError, match="'img1'.*target 9"):
        models.explain(vit, batch, target=[0, 9])


def test_unknown_method_lists_the_available_ones(vit):
    with pytest.raises(models.AttnAuditError, match="unknown method 'gradcam'.*chefer2021"):
        models.explain(vit, vit.preprocess(tiny_models.images(1)), method="gradcam")


def test_nan_inside_one_sample_is_reported_for_that_sample_only(vit):
    batch = vit.preprocess(tiny_models.images(3))
    clean = models.explain(vit, batch, method="chefer2021")
    batch["pixel_values"][1, 0, 0, 0] = float("nan")
    exps = models.explain(vit, batch, method=["chefer2021", "rollout"])
    by = {(e.sample_id, e.method): e for e in exps}
    assert not by[("img1", "chefer2021")].ok and "NaN" in by[("img1", "chefer2021")].error
    assert by[("img1", "chefer2021")].error_stage == "explain"
    for sid, expected in (("img0", clean[0]), ("img2", clean[2])):
        np.testing.assert_allclose(by[(sid, "chefer2021")].relevance["image"], expected.relevance["image"], atol=1e-6)


def test_unsupported_model_class_names_the_class_and_the_supported_families():
    opt = T.OPTForCausalLM(T.OPTConfig(num_hidden_layers=1, num_attention_heads=2, hidden_size=8, ffn_dim=16,
                                        word_embed_proj_dim=8, vocab_size=10))
    with pytest.raises(models.UnsupportedModelError, match=r"'OPTForCausalLM' is not supported.*vit:.*bert:"):
        models.wrap(opt)


def test_pickle_checkpoints_are_refused_with_a_conversion_hint(tmp_path):
    model = tiny_models.vit()
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(models.UnsafeCheckpointError, match=r"pytorch_model\.bin.*never loaded.*safe_serialization"):
        models.load(str(tmp_path))


def test_missing_and_malformed_model_references(tmp_path):
    with pytest.raises(models.ModelLoadError, match="does not exist"):
        models.load(str(tmp_path / "nope"))
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(models.ModelLoadError, match="is a file"):
        models.load(str(tmp_path / "file.txt"))
    with pytest.raises(models.ModelLoadError, match="unknown built-in model 'nope'"):
        models.load("builtin:nope")
