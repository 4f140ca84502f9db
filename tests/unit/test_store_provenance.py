"""Run keys and fingerprints: deterministic, content-addressed, independent of file locations."""

import re
import shutil

import numpy as np
import pytest
from attn_audit.storage.store import RunSpec, code_version, fingerprint_files, render, run_key


def test_fingerprint_depends_on_content_not_location_or_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    (a / "model.safetensors").write_bytes(b"\x00weights" * 1000)
    (a / "config.json").write_text('{"x": 1}')
    shutil.copytree(a, b)
    files_a = [a / "model.safetensors", a / "config.json"]
    assert fingerprint_files(files_a) == fingerprint_files(reversed([b / "model.safetensors", b / "config.json"]))
    (b / "config.json").write_text('{"x": 2}')
    assert fingerprint_files(files_a) != fingerprint_files([b / "model.safetensors", b / "config.json"])
    with pytest.raises(FileNotFoundError):
        fingerprint_files([a / "missing.safetensors"])


def spec(**overrides):
    base = dict(model_ref="builtin:m", model_fingerprint="m" * 64, dataset_ref="builtin:d",
                dataset_fingerprint="d" * 64, methods=("chefer2021", "rollout"),
                config={"target": "predicted", "limit": None}, num_samples=10, shard_size=4)
    return RunSpec(**{**base, **overrides})


def test_run_key_is_deterministic_and_covers_model_data_methods_config():
    run_id = spec().run_id
    assert re.fullmatch(r"[0-9a-f]{16}", run_id)
    assert spec().run_id == run_id
    assert spec(methods=("rollout", "chefer2021")).run_id == run_id  # a set of methods, not a sequence
    assert spec(model_ref="/elsewhere/same-weights").run_id == run_id  # fingerprints, not paths, identify
    assert spec(shard_size=100, num_samples=10).run_id == run_id  # compute layout is not identity
    for changed in (spec(model_fingerprint="x" * 64), spec(dataset_fingerprint="y" * 64), spec(methods=("rollout",)),
                    spec(config={"target": "label", "limit": None}), spec(relevance_dtype="float16")):
        assert changed.run_id != run_id
    assert run_key("a", "b", ["m"], {"k": 1}) == run_key("a", "b", ["m"], {"k": 1})


def test_code_version_names_the_package_and_the_commit_when_there_is_one():
    assert re.fullmatch(r"attn-audit [^ ]+(\+git\.[0-9a-f]{12}(\.dirty)?)?", code_version())


def test_token_weights_and_colours():
    weights = render.token_weights(np.array([9.0, 1.0, -2.0, 9.0]), np.array([True, False, False, True]))
    np.testing.assert_allclose(weights, [0.0, 0.5, -1.0, 0.0])
    assert render.token_colour(1.0) == "#ff0000" and render.token_colour(0.0) == "#ffffff"
    page = render.tokens_html([("m", ["<b>", "x"], np.array([1.0, 0.5]), None)], "t")
    assert "&lt;b&gt;" in page and "<b>" not in page


def test_panels_draw_each_map_over_the_image_as_flat_cells(tmp_path):
    from PIL import Image

    image = Image.new("RGB", (40, 20), "gray")
    rel = np.zeros((2, 4), np.float32)
    rel[0, 0] = 1.0
    render.save_panels(tmp_path / "p.png", image, [("a", rel), ("b", rel)], "title", boxes=[(0, 0, 10, 10)])
    drawn = Image.open(tmp_path / "p.png")
    assert drawn.size[0] > 2.5 * drawn.size[1]  # input + two panels side by side
    pixels = np.asarray(drawn.convert("RGB")).astype(int)
    assert (pixels[..., 0] - pixels[..., 2] > 100).any()  # the hot cell is drawn red over the grey input
    render.save_panels(tmp_path / "bare.png", None, [("a", rel)])  # the input could not be read again
    with pytest.raises(ValueError, match="must be 2-D"):
        render.save_panels(tmp_path / "x.png", image, [("a", rel.ravel())])
