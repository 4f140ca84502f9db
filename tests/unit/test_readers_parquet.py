"""parquet:PATH — typed columns checked at open, image bytes, row groups, null cells named by row."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from attn_audit.storage.datasets import DatasetError, ParquetDataset, SampleError, open_dataset
from PIL import Image


def png_bytes(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((2, 2), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def write(path: Path, columns: dict, row_group_size: int | None = None) -> Path:
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_round_trip_across_row_groups(tmp_path):
    count = 10
    path = write(tmp_path / "d.parquet", {
        "id": [f"s{k}" for k in range(count)],
        "image": [png_bytes(k) for k in range(count)],
        "text": [f"text {k}" for k in range(count)],
        "label": pa.array([k % 3 for k in range(count)], pa.int32()),
        "gt_text_tokens": [[k] for k in range(count)],
        "gt_image_mask": [[[True, False], [False, bool(k % 2)]] for k in range(count)],
    }, row_group_size=3)
    data = open_dataset(f"parquet:{path}")
    assert len(data) == count and data.modalities == ("image", "text") and data.label_names is None
    for k in (9, 0, 4, 3, 8, 1):  # jump between row groups
        sample = data[k]
        assert sample["id"] == f"s{k}" and sample["image"] == png_bytes(k) and sample["label"] == k % 3
        assert sample["ground_truth"]["text_tokens"] == [k]
        assert sample["ground_truth"]["image_mask"].tolist() == [[True, False], [False, bool(k % 2)]]
    copy = pickle.loads(pickle.dumps(data))
    assert copy[5]["image"] == data[5]["image"] and copy.fingerprint() == data.fingerprint()


def test_paths_structs_and_dictionary_labels(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "a.png")
    struct = pa.array([{"bytes": png_bytes(1), "path": None}, {"bytes": None, "path": "a.png"}],
                      pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    data = ParquetDataset(write(tmp_path / "d.parquet", {
        "id": pa.array([1, 2], pa.int64()), "image": struct,
        "label": pa.array(["dog", "cat"]).dictionary_encode()}))
    assert data.label_names == ["cat", "dog"] and data.sample_id(1) == "2"
    assert data[0]["image"] == png_bytes(1) and data[1]["image"] == str(tmp_path / "a.png")
    assert data[1]["label"] == "cat"


@pytest.mark.parametrize("columns, message", [
    ({"id": [None, "b"], "text": ["x", "y"]}, "row index 0, id 'd.parquet:0': id is missing"),
    ({"id": ["a", "b"], "text": [None, "y"]}, "row index 0, id 'a': text is missing"),
    ({"id": ["a", "b"], "image": ["gone.png", None]}, "row index 0, id 'a': image file not found"),
    ({"id": ["a", "b"], "image": [b"", b"x"]}, "row index 0, id 'a': image bytes are empty"),
])
def test_bad_cells_fail_alone_naming_the_row(tmp_path, columns, message):
    data = ParquetDataset(write(tmp_path / "d.parquet", columns))
    with pytest.raises(SampleError, match=f"^d.parquet {message}"):
        data[0]
    assert len(data) == 2


@pytest.mark.parametrize("columns, message", [
    ({"id": ["a"], "text": [5]}, r"column 'text' has type int64; accepted: \['string'\]"),
    ({"id": [1.5], "text": ["x"]}, "column 'id' has type double"),
    ({"id": ["a"], "text": ["x"], "label": [0.5]}, "column 'label' has type double"),
    ({"id": ["a"], "text": ["x"], "gt_text_tokens": [["1"]]}, "column 'gt_text_tokens' has type list<"),
    ({"name": ["a"], "text": ["x"]}, "no 'id' column"),
    ({"id": ["a"], "label": [1]}, "needs an 'image' or a 'text' column"),
    ({"id": ["a", "b", "a"], "text": ["x", "y", "z"]}, "'a' at row index 0, row index 2"),
])
def test_whole_file_problems_are_dataset_errors(tmp_path, columns, message):
    with pytest.raises(DatasetError, match=message):
        ParquetDataset(write(tmp_path / "d.parquet", columns))


def test_a_file_that_is_not_parquet_is_a_dataset_error(tmp_path):
    (tmp_path / "d.parquet").write_text("id,text\n")
    with pytest.raises(DatasetError, match="cannot read as Parquet"):
        ParquetDataset(tmp_path / "d.parquet")
