"""imagefolder:PATH — class sub-folders or loose images; files are checked, not decoded."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import DatasetError, ImageFolderDataset, SampleError, open_dataset
from PIL import Image


def png(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    for name in ("dog/b.png", "dog/a.JPG", "cat/x/deep.png", "cat/1.png"):
        png(tmp_path / name)
    (tmp_path / "bird").mkdir()  # a class with no images yet is still a class
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"hidden files are not samples")
    png(tmp_path / ".cache" / "thumb.png")
    return tmp_path


def test_class_folders_give_string_labels_and_relative_ids(folder):
    data = open_dataset(f"imagefolder:{folder}")
    assert data.ref == f"imagefolder:{folder}" and data.modalities == ("image",)
    assert data.label_names == ["bird", "cat", "dog"]
    ids = ["cat/1.png", "cat/x/deep.png", "dog/a.JPG", "dog/b.png"]
    assert [data.sample_id(i) for i in range(len(data))] == ids
    sample = data[1]
    assert sample == {"id": "cat/x/deep.png", "image": str(folder / "cat/x/deep.png"), "label": "cat"}
    assert [s["label"] for s in data] == ["cat", "cat", "dog", "dog"]


def test_loose_images_are_unlabelled(tmp_path):
    png(tmp_path / "b.png")
    png(tmp_path / "a.webp")
    data = ImageFolderDataset(tmp_path)
    assert data.label_names is None
    assert list(data) == [{"id": name, "image": str(tmp_path / name)} for name in ("a.webp", "b.png")]


def test_files_that_are_not_images_are_named_in_a_warning(folder):
    (folder / "dog" / "notes.txt").write_text("not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 files that are not images \(dog/notes.txt\)"):
        data = ImageFolderDataset(folder)
    assert len(data) == 4


def test_an_image_deleted_after_opening_fails_alone(folder):
    data = ImageFolderDataset(folder)
    (folder / "dog" / "a.JPG").unlink()
    with pytest.raises(SampleError, match="'dog/a.JPG'.*file not found") as info:
        data[2]
    assert info.value.sample_id == "dog/a.JPG"
    assert data[3]["id"] == "dog/b.png"


@pytest.mark.parametrize("setup, message", [
    (lambda root: root / "missing", "no such folder"),
    (lambda root: png(root / "file.png"), "no such folder"),
    (lambda root: root, "no image files"),
])
def test_unusable_folders_are_refused(tmp_path, setup, message):
    with pytest.raises(DatasetError, match=message):
        ImageFolderDataset(setup(tmp_path))


def test_loose_images_next_to_class_folders_are_refused(folder):
    png(folder / "stray.png")
    with pytest.raises(DatasetError, match="loose images.*stray.png"):
        ImageFolderDataset(folder)


def test_fingerprint_follows_image_content_and_pickles(folder):
    data = ImageFolderDataset(folder)
    before = data.fingerprint()
    assert ImageFolderDataset(folder).fingerprint() == before
    png(folder / "dog" / "b.png", value=9)
    assert ImageFolderDataset(folder).fingerprint() != before
    assert pickle.loads(pickle.dumps(data))[0] == data[0]


def test_links_to_folders_are_followed(folder, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    png(elsewhere / "linked.png")
    (folder / "dog" / "more").symlink_to(elsewhere, target_is_directory=True)
    assert "dog/more/linked.png" in [s["id"] for s in ImageFolderDataset(folder)]


@pytest.mark.parametrize("link, target", [("cat/x/loop", ".."), ("dog/self", "."), ("cat/root", "..")])
def test_a_folder_link_that_loops_is_refused_naming_it(folder, link, target):
    (folder / link).symlink_to(target, target_is_directory=True)
    with pytest.raises(DatasetError, match=rf"{link} links to .*a folder it is inside of \(a loop\)"):
        ImageFolderDataset(folder)
