"""One bad sample fails alone, as its own error row, through real files, the readers, the built-in ViT and the
shard code the flow runs: images too large to decode safely, corrupt, truncated or empty; texts that are not
valid Unicode or show nothing. Deep and unusual image modes are read, scaled by their bit depth."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from attn_audit.flows.plan import model_fingerprint
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import RunSpec, Store
from attn_audit.tasks.explain_dataset import explain_dataset
from attn_audit.tasks.explain_shard import explain_shard
from attn_audit.tasks.shards import Shard
from PIL import Image

from attn_audit import models
from tests import tiny_models
from tests.bad_files import misdeclared_chunk_png

VIT = "builtin:fashion-vit"


@pytest.fixture(scope="module")
def vit():
    return models.load(VIT, device="cpu")


@pytest.fixture(scope="module")
def bert():
    model, tok = tiny_models.text_model("bert")
    return models.wrap(model, tokenizer=tok, device="cpu")


def grey(seed: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def explain_as_one_shard(m, data_ref: str, store_path):
    """The shard code the flow's actors run, over the whole dataset as one shard: (predictions, errors)."""
    store = Store.open(store_path, create=True)
    dataset = open_dataset(data_ref)
    spec = RunSpec(VIT, model_fingerprint(VIT), dataset.ref, dataset.fingerprint(), ("rollout",),
                   {"target": "predicted"}, num_samples=len(dataset), shard_size=len(dataset))
    run = store.begin_run(spec)
    explain_shard(m, dataset, store, run.run_id, Shard(0, 0, len(dataset)), ["rollout"], batch_size=8)
    return store.predictions(run_id=run.run_id).to_pylist(), store.errors(run_id=run.run_id).to_pylist()


def test_a_decompression_bomb_in_a_shard_is_one_error_row_and_the_rest_is_explained(vit, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(grey(i)).save(folder / f"ok{i}.png")
    Image.new("L", (20000, 20000)).save(folder / "huge.png")  # 400 Mpixels in 388 kB: over Pillow's guard
    preds, errors = explain_as_one_shard(vit, f"imagefolder:{folder}", tmp_path / "store")
    assert sorted(p["sample_id"] for p in preds) == [f"ok{i}.png" for i in range(5)]
    assert [(e["sample_id"], e["stage"]) for e in errors] == [("huge.png", "decode")]
    assert "400000000 pixels" in errors[0]["message"] and "MAX_IMAGE_PIXELS" in errors[0]["message"]


@pytest.mark.parametrize("image, message", [
    (misdeclared_chunk_png(), r"cannot decode image \(SyntaxError\): broken PNG file"),
    (png_bytes(Image.fromarray(grey(1)))[:300], "image file is truncated"),
    (np.zeros((0, 0), np.uint8), r"image is empty \(0×0 pixels\)"),
    (Image.new("L", (5, 0)), r"image is empty \(5×0 pixels\)"),
    (np.array([["a", "b"]]), "image array must hold numbers, got dtype <U1"),
    (Image.fromarray(np.full((8, 8), 70000, np.int32)), r"32-bit image values span 70000\.\.70000.*8 or 16 bits"),
])
def test_an_image_that_cannot_be_decoded_fails_alone(vit, image, message):
    samples = [{"id": "ok", "image": grey(0)}, {"id": "bad", "image": image}, {"id": "ok2", "image": grey(1)}]
    batch = vit.preprocess(samples, errors="collect")
    assert batch.sample_ids == ["ok", "ok2"]
    [failure] = batch.failures
    assert (failure.sample_id, failure.stage) == ("bad", "decode")
    assert re.search(message, failure.message), failure.message
    exps = models.explain(vit, batch, method="rollout")
    assert {e.sample_id: e.ok for e in exps} == {"ok": True, "bad": False, "ok2": True}


def pixels(m, image) -> np.ndarray:
    batch = m.preprocess([{"id": "x", "image": image}])
    return batch["pixel_values"][0].numpy()


def test_deep_images_are_scaled_by_their_bit_depth_not_clipped(vit, tmp_path):
    eight = grey(3)
    deep = eight.astype(np.uint16) * 257  # the same picture in 16 bits: 255 → 65535
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    expected = pixels(vit, eight)
    for image in (str(tmp_path / "deep.png"), deep, Image.fromarray(deep.astype(np.int32))):  # PNG, array, mode I
        np.testing.assert_allclose(pixels(vit, image), expected, atol=1e-6)


@pytest.mark.filterwarnings("error")  # nor one warning per image (Pillow warns of palette transparency)
@pytest.mark.parametrize("mode, fmt", [("CMYK", "JPEG"), ("P", "PNG"), ("RGBA", "PNG"), ("LA", "PNG"),
                                       ("1", "PNG"), ("F", "TIFF")])
def test_other_image_modes_read_as_the_same_grey_picture(vit, mode, fmt):
    source = Image.fromarray(grey(4))
    converted = source.convert(mode)
    if mode == "P":
        converted.info["transparency"] = bytes([0, 128, 255])  # palette entries partly transparent
    buf = io.BytesIO()
    converted.save(buf, fmt)
    expected = pixels(vit, source.convert("1") if mode == "1" else source)  # "1" is dithered on the way
    tolerance = 0.1 if fmt == "JPEG" else 0.02  # JPEG is lossy; the rest round at most once
    assert np.abs(pixels(vit, buf.getvalue()) - expected).mean() < tolerance


def test_texts_no_tokenizer_can_take_or_with_nothing_visible_fail_alone(bert, tmp_path):
    rows = ['{"id": "ok", "text": "a red coat"}',
            '{"id": "surrogate", "text": "caf\\u00e9 \\ud800"}',  # half an emoji, a JSON escape with no pair
            '{"id": "zero-width", "text": "\\u200b\\u200c\\ufeff"}',
            '{"id": "accent-only", "text": "\\u0301"}',  # a combining mark the uncased tokenizer strips
            '{"id": "ok2", "text": "two blue bags"}']
    path = tmp_path / "texts.jsonl"
    path.write_text("\n".join(rows) + "\n")
    dataset = open_dataset(f"jsonl:{path}")
    [result] = explain_dataset(bert, dataset, ["rollout"], batch_size=len(dataset))
    assert sorted(e.sample_id for e in result.explanations if e.ok) == ["ok", "ok2"]
    failures = {sid: (stage, message) for sid, stage, message in result.failures()}
    assert failures == {
        "surrogate": ("input", "text holds a lone surrogate U+D800 at character 5, which is not valid Unicode; "
                               "repair the text's encoding"),
        "zero-width": ("input", "text is empty: it has only invisible characters (zero-width, format, control)"),
        "accent-only": ("input", "text is empty to the model: it tokenizes to special tokens only")}
    with pytest.raises(models.SampleError, match="'e'.*text is empty"):
        bert.preprocess([{"id": "e", "text": "\u200b"}])
