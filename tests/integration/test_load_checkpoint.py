"""models.load on stock checkpoint folders written by save_pretrained (safetensors)."""

import json

import numpy as np

from attn_audit import models
from tests import tiny_models
from tests.reference.hf import reference_classifier_row


def test_stock_vit_folder_gives_patch_grids_equal_to_the_reference(tmp_path):
    tiny_models.vit().save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.25, 0.3], "do_normalize": True}))
    m = models.load(str(tmp_path), device="cpu")
    assert m.model.config._attn_implementation == "eager" and not m.model.training
    batch = m.preprocess(tiny_models.images(3, size=48))  # resized to the model's 32 px
    pixel = batch["pixel_values"][0, :, 0, 0].numpy()
    raw = tiny_models.images(3, size=48)[0]["image"]
    assert pixel.shape == (3,) and not np.allclose(pixel, raw[0, 0] / 255.0)  # normalised with the folder's stats
    for exp, i in zip(models.explain(m, batch), range(3)):
        ref = reference_classifier_row(m.model, {"pixel_values": batch["pixel_values"][i:i + 1]}).float().numpy()
        assert exp.relevance["image"].shape == (4, 4) and exp.target_label in tiny_models.LABELS.values()
        np.testing.assert_allclose(exp.relevance["image"].ravel(), ref[1:], atol=1e-5)


def test_text_folder_loads_with_its_tokenizer(tmp_path):
    model, tok = tiny_models.text_model("bert")
    model.save_pretrained(tmp_path / "ckpt")
    tok.save_pretrained(tmp_path / "ckpt")
    m = models.load(str(tmp_path / "ckpt"), device="cpu")
    exp = models.explain(m, m.preprocess([{"id": "a", "text": "the cat sat on the mat"}]))[0]
    assert exp.tokens["text"][0] == "[CLS]" and exp.tokens["text"][-1] == "[SEP]"
    assert exp.relevance["text"][0] == 0.0  # the readout token's own entry
