"""jsonl:PATH — round trip, and every malformed row named by its line and id."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import DatasetError, JsonlDataset, SampleError, open_dataset
from PIL import Image

from tests.bad_files import misdeclared_chunk_png


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_round_trip_with_images_text_labels_and_ground_truth(tmp_path):
    png(tmp_path / "img" / "a.png", np.zeros((4, 4), np.uint8))
    png(tmp_path / "masks" / "b.png", np.eye(4, dtype=np.uint8) * 255)
    path = write_jsonl(tmp_path / "data.jsonl", [
        {"id": "a", "image": "img/a.png", "text": "a red coat", "label": "coat",
         "gt_text_tokens": [1, 2], "gt_image_mask": [[0, 1], [1, 0]], "extra": "ignored"},
        "",
        {"id": 7, "image": str(tmp_path / "img" / "a.png"), "text": "a bag", "label": "bag",
         "gt_image_mask": "masks/b.png"},
        {"id": "c", "image": "img/a.png", "text": "no label", "label": None},
    ])
    data = open_dataset(f"jsonl:{path}")
    assert data.modalities == ("image", "text") and data.label_names == ["bag", "coat"] and len(data) == 3
    first, second, third = data[0], data[1], data[2]
    assert first["id"] == "a" and first["label"] == "coat"
    assert first["image"] == str(tmp_path / "img" / "a.png")
    assert first["ground_truth"]["text_tokens"] == [1, 2]
    assert first["ground_truth"]["image_mask"].tolist() == [[False, True], [True, False]]
    assert second["id"] == "7" and np.array_equal(second["ground_truth"]["image_mask"], np.eye(4, dtype=bool))
    assert third["label"] is None and "ground_truth" not in third and "extra" not in first


def test_integer_labels_have_no_names(tmp_path):
    data = JsonlDataset(write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "x", "label": 3}]))
    assert data.label_names is None and data[0]["label"] == 3 and data.modalities == ("text",)


B = '{"id": "b", "image": "ok.png", "text": "t", '  # a row that only its last column spoils


@pytest.mark.parametrize("line, message", [
    ('{"id": "x", "text": "ok", "image": "ok.png"', "line 2, id 'd.jsonl:2': not valid JSON"),
    ('["x", "ok"]', "line 2, id 'd.jsonl:2': expected a JSON object, got list"),
    ('{"text": "no id"}', "line 2, id 'd.jsonl:2': id is missing"),
    ('{"id": " ", "text": "blank id"}', "line 2, id 'd.jsonl:2': id is empty"),
    ('{"id": 1.5, "text": "float id"}', "line 2, id 'd.jsonl:2': id must be a string, got float 1.5"),
    ('{"id": "b", "image": "ok.png", "text": 5}', "line 2, id 'b': text must be a string, got int 5"),
    ('{"id": "b", "image": "ok.png", "text": "   "}', "line 2, id 'b': text is empty"),
    ('{"id": "b", "image": "gone.png", "text": "t"}', "line 2, id 'b': image file not found: .*gone.png"),
    ('{"id": "b", "image": 12, "text": "t"}', "line 2, id 'b': image must be a file path"),
    (B + '"label": 2.5}', "line 2, id 'b': label must be an integer or a string"),
    (B + '"gt_text_tokens": [1, -2]}', "line 2, id 'b': gt_text_tokens must be"),
    (B + '"gt_text_tokens": "1 2"}', "line 2, id 'b': gt_text_tokens must be"),
    (B + '"gt_image_mask": [[0, 1], [1]]}', "line 2, id 'b': gt_image_mask as a list"),
    (B + '"gt_image_mask": [[0, 2]]}', "line 2, id 'b': gt_image_mask as a list"),
    (B + '"gt_image_mask": "m.png"}', "line 2, id 'b': gt_image_mask file not found"),
    (B + '"region_features": [[1, ' + "9" * 400 + ']]}', "line 2, id 'b': region_features holds an integer too "
                                                          "large for float32"),
])
def test_a_malformed_row_fails_alone_naming_its_line_and_id(tmp_path, line, message):
    png(tmp_path / "ok.png", np.zeros((2, 2), np.uint8))
    fine = {"text": "fine", "image": "ok.png"}
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", **fine}, line, {"id": "z", **fine}])
    data = JsonlDataset(path)
    assert len(data) == 3  # nothing dropped
    with pytest.raises(SampleError, match=f"^d.jsonl {message}") as info:
        data[1]
    assert info.value.sample_id == data.sample_id(1)
    assert data[0]["text"] == data[2]["text"] == "fine"


@pytest.mark.parametrize("content, reason", [(b"not a png", "UnidentifiedImageError"),
                                             (misdeclared_chunk_png(), "SyntaxError")])
def test_a_corrupt_mask_image_is_a_row_error(tmp_path, content, reason):
    (tmp_path / "m.png").write_bytes(content)
    rows = [{"id": "a", "text": "t", "gt_image_mask": "m.png"}]
    data = JsonlDataset(write_jsonl(tmp_path / "d.jsonl", rows))
    with pytest.raises(SampleError, match=rf"line 1, id 'a': gt_image_mask cannot be decoded as an image \({reason}\)"):
        data[0]


def test_sample_errors_survive_pickling(tmp_path):
    data = JsonlDataset(write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": 1}]))
    with pytest.raises(SampleError) as info:
        data[0]
    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.sample_id, copy.message, str(copy)) == ("a", info.value.message, info.value.message)
    assert pickle.loads(pickle.dumps(data)).sample_id(0) == "a"


def test_duplicate_ids_are_named_with_their_lines(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "1"}, {"id": "b", "text": "2"},
                                              {"id": "a", "text": "3"}, {"id": "b", "text": "4"}])
    with pytest.raises(DatasetError, match="2 duplicate ids: 'a' at line 1, line 3; 'b' at line 2, line 4"):
        JsonlDataset(path)


@pytest.mark.parametrize("rows, message", [
    ([], "no rows"),
    ([""], "no rows"),
    ([{"text": "t"}], "no 'id' column"),
    ([{"id": "a", "label": 1}], "needs an 'image' or a 'text' column"),
    ([{"id": "a", "text": "t", "gt_box": [1, 2]}], r"unknown ground-truth columns \['gt_box'\]"),
    ([{"id": "a", "text": "t", "label": 1}, {"id": "b", "text": "t", "label": "cat"}], "mixes integers"),
])
def test_whole_file_problems_are_dataset_errors(tmp_path, rows, message):
    with pytest.raises(DatasetError, match=message):
        JsonlDataset(write_jsonl(tmp_path / "d.jsonl", rows))


def test_a_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="jsonl: no such file"):
        open_dataset(f"jsonl:{tmp_path / 'nope.jsonl'}")


def test_fingerprint_covers_referenced_image_bytes(tmp_path):
    image = png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    path = write_jsonl(tmp_path / "d.jsonl", [{"id": "a", "image": "a.png"}])
    before = JsonlDataset(path).fingerprint()
    assert JsonlDataset(path).fingerprint() == before
    png(image, np.ones((2, 2), np.uint8))
    assert JsonlDataset(path).fingerprint() != before
