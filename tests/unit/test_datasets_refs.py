"""Data references: what `open_dataset` accepts, and what it says when it does not."""

from __future__ import annotations

import pytest
from attn_audit.storage.datasets import (
    BUILTINS,
    BbcNews,
    CsvDataset,
    DatasetError,
    FashionCanvas,
    FashionVqa,
    ImageFolderDataset,
    JsonlDataset,
    ParquetDataset,
    open_dataset,
)


def test_builtins_open_with_defaults_and_a_canonical_ref():
    data = open_dataset("builtin:fashion-canvas")
    assert isinstance(data, FashionCanvas) and len(data) == 10_000 and data.name == "fashion-canvas"
    assert data.ref == "builtin:fashion-canvas?split=test&n=10000&seed=0"
    assert open_dataset(data.ref).fingerprint() == data.fingerprint()
    assert set(BUILTINS) == {"fashion-canvas", "fashion-vqa", "fashion-caption", "fashion-detect", "bbc-news",
                             "kv-retrieval"}


def test_builtin_parameters():
    data = open_dataset("builtin:fashion-vqa?split=test&n=5000&seed=7")
    assert isinstance(data, FashionVqa) and (data.split, data.n, data.seed) == ("test", 5000, 7)
    assert data.modalities == ("image", "text") and len(data) == 5000
    assert isinstance(open_dataset("builtin:bbc-news?split=train"), BbcNews)


@pytest.mark.parametrize("ref, message", [
    ("builtin:fashion-canvas?n=ten", "n must be an integer"),
    ("builtin:fashion-canvas?n=0", "n must be >= 1"),
    ("builtin:fashion-canvas?seed=-1", "seed >= 0"),
    ("builtin:fashion-canvas?split=val", "split must be one of"),
    ("builtin:fashion-canvas?colour=red", r"takes parameters \['split', 'n', 'seed', 'root'\]"),
    ("builtin:bbc-news?n=5", r"takes parameters \['split'\]"),
    ("builtin:bbc-news?split=dev", "split must be one of"),
])
def test_bad_builtin_parameters_are_named(ref, message):
    with pytest.raises(DatasetError, match=message):
        open_dataset(ref)


@pytest.mark.parametrize("ref", ["builtin:mnist", "builtin:"])
def test_unknown_builtin_lists_the_builtins(ref):
    names = "fashion-canvas, fashion-vqa, fashion-caption, fashion-detect, bbc-news"
    with pytest.raises(DatasetError, match=names):
        open_dataset(ref)


@pytest.mark.parametrize("ref", ["hf:mnist", "data.jsonl", "", "csv:", "/tmp/data.csv"])
def test_unknown_scheme_lists_what_is_supported(ref):
    with pytest.raises(DatasetError) as info:
        open_dataset(ref)
    for scheme in ("builtin:NAME", "imagefolder:PATH", "jsonl:PATH", "csv:PATH", "parquet:PATH"):
        assert scheme in str(info.value)


def test_file_schemes_reach_their_readers(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": "a", "text": "hello"}\n')
    (tmp_path / "d.csv").write_text("id,text\na,hello\n")
    (tmp_path / "images" / "cls").mkdir(parents=True)
    (tmp_path / "images" / "cls" / "x.png").write_bytes(b"not decoded by the reader")
    assert isinstance(open_dataset(f"jsonl:{tmp_path / 'd.jsonl'}"), JsonlDataset)
    assert isinstance(open_dataset(f"csv:{tmp_path / 'd.csv'}"), CsvDataset)
    assert isinstance(open_dataset(f"imagefolder:{tmp_path / 'images'}"), ImageFolderDataset)
    with pytest.raises(DatasetError, match="no such file"):
        open_dataset(f"parquet:{tmp_path / 'missing.parquet'}")
    assert ParquetDataset.scheme == "parquet"


def test_paths_are_taken_verbatim(tmp_path):
    odd = tmp_path / "what?n=3.jsonl"
    odd.write_text('{"id": "a", "text": "hello"}\n')
    data = open_dataset(f"jsonl:{odd}")
    assert data.ref == f"jsonl:{odd}" and data.name == "what?n=3.jsonl"
