"""csv:PATH — text cells converted by column; malformed rows named by line and id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import CsvDataset, DatasetError, SampleError, open_dataset
from PIL import Image


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_round_trip_with_quoted_cells_integer_labels_and_ground_truth(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.eye(2, dtype=np.uint8)).save(tmp_path / "m.png")
    path = write(tmp_path / "d.csv", (
        "id,image,text,label,gt_text_tokens,gt_image_mask,notes\n"
        'a,a.png,"red, warm coat",3,"[0, 1]","[[1, 0], [0, 1]]",x\n'
        "\n"
        'b,a.png,"two\nlines",,,m.png,\n'
        "c,a.png,plain,0,[],,\n"))
    data = open_dataset(f"csv:{path}")
    assert data.modalities == ("image", "text") and data.label_names is None and len(data) == 3
    a, b, c = data[0], data[1], data[2]
    assert a == {"id": "a", "image": str(tmp_path / "a.png"), "text": "red, warm coat", "label": 3,
                 "ground_truth": {"text_tokens": [0, 1], "image_mask": a["ground_truth"]["image_mask"]}}
    assert a["ground_truth"]["image_mask"].tolist() == [[True, False], [False, True]]
    assert b["text"] == "two\nlines" and b["label"] is None
    assert b["ground_truth"]["image_mask"].tolist() == [[True, False], [False, True]]
    assert c["label"] == 0 and c["ground_truth"] == {"text_tokens": []}


def test_labels_are_strings_unless_all_are_integers_and_a_bom_is_fine(tmp_path):
    data = CsvDataset(write(tmp_path / "d.csv", "id,text,label\na,x,cat\nb,y,2\n", encoding="utf-8-sig"))
    assert data.label_names == ["2", "cat"] and data[1]["label"] == "2" and data.sample_id(0) == "a"


@pytest.mark.parametrize("row, message", [
    ("b,t,extra", "line 3, id 'd.csv:3': has 3 fields, the header has 2"),
    (",t", "line 3, id 'd.csv:3': id is empty"),
    ("b,", "line 3, id 'b': text is missing"),
    ('b,"   "', "line 3, id 'b': text is empty"),
])
def test_a_malformed_row_fails_alone(tmp_path, row, message):
    data = CsvDataset(write(tmp_path / "d.csv", f"id,text\na,fine\n{row}\nz,fine\n"))
    assert len(data) == 3
    with pytest.raises(SampleError, match=f"^d.csv {message}"):
        data[1]
    assert data[0]["text"] == data[2]["text"] == "fine"


@pytest.mark.parametrize("cells, message", [
    ("gone.png,", "image file not found"),
    (",", "image is missing"),
    ('a.png,"[1, 2"', "gt_text_tokens is not valid JSON"),
    ('a.png,"[1, true]"', "gt_text_tokens must be a list of word positions"),
])
def test_bad_cells_name_the_line_and_id(tmp_path, cells, message):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "a.png")
    data = CsvDataset(write(tmp_path / "d.csv", f"id,image,gt_text_tokens\nq,{cells}\n"))
    with pytest.raises(SampleError, match=f"line 2, id 'q': {message}") as info:
        data[0]
    assert info.value.sample_id == "q"


@pytest.mark.parametrize("text, message", [
    ("", "no header row"),
    ("id,text\n", "no rows"),
    ("id,text,text\na,b,c\n", "repeated column names"),
    ("name,text\na,b\n", "no 'id' column"),
    ("id,text\na,x\nb,y\na,z\n", "1 duplicate ids: 'a' at line 2, line 4"),
])
def test_whole_file_problems_are_dataset_errors(tmp_path, text, message):
    with pytest.raises(DatasetError, match=message):
        CsvDataset(write(tmp_path / "d.csv", text))


def test_undecodable_text_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="cannot read as UTF-8 CSV"):
        CsvDataset(write(tmp_path / "d.csv", "id,text\na,caf\xe9\n", encoding="latin-1"))


@pytest.mark.parametrize("text, line", [
    ('id,text\na,fine\nb,"never closed\nc,swallowed\nd,too\n', 3),
    ('id,text\na,"two\nlines",\nb,x,"\n', 4),  # the quote opens at the end of a line, after a closed one
    ('id,text\na,fine\nb,"no newline at the end', 3),
])
def test_an_unclosed_quote_is_a_dataset_error_naming_the_line_it_opens_on(tmp_path, text, line):
    with pytest.raises(DatasetError, match=rf"d\.csv: the quote opened on line {line} is never closed"):
        CsvDataset(write(tmp_path / "d.csv", text))


def test_a_quoted_cell_may_end_the_file(tmp_path):
    data = CsvDataset(write(tmp_path / "d.csv", 'id,text\r\na,"two\r\nlines"'))
    assert data[0] == {"id": "a", "text": "two\r\nlines"}
