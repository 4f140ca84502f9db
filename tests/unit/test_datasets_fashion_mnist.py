"""Fashion-MNIST loading: the bundled test subset, the Debian path, a given folder, clear errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from attn_audit.storage.datasets import CLASS_NAMES, CLASS_WORDS, DatasetError, FashionCanvas, load_fashion_mnist
from attn_audit.storage.datasets.fashion import mnist

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def write_fake_fashion_mnist(folder: Path, split: str, per_class: int, compress: bool = True) -> Path:
    """Idx files holding `per_class` random items of every class (item k has class k % 10)."""
    rng = np.random.default_rng(0)
    count = 10 * per_class
    images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
    images[:, :4] = 0  # like real items: some zero background
    labels = (np.arange(count) % 10).astype(np.uint8)
    images_name, labels_name = IDX_NAMES[split]
    for name, magic, array in ((images_name, 2051, images), (labels_name, 2049, labels)):
        header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
        payload = header + array.tobytes()
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)
    return folder


def test_bundled_test_subset_is_complete_and_read_only():
    images, labels = load_fashion_mnist("test")
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert np.bincount(labels).min() > 400  # every class is well represented
    assert (images.reshape(5000, -1) > 0).any(axis=1).all()  # every item has pixels to mask
    with pytest.raises(ValueError):
        images[0, 0, 0] = 1


def test_bundled_subset_ships_its_licence():
    notice = (mnist.BUNDLED_SUBSET.parent / "FASHION_MNIST_LICENSE.txt").read_text()
    assert "Zalando SE" in notice and "MIT License" in notice
    assert mnist.BUNDLED_SUBSET.stat().st_size <= 3_000_000


def test_class_names_and_words():
    assert CLASS_NAMES[0] == "T-shirt/top" and CLASS_NAMES[9] == "Ankle boot" and len(CLASS_NAMES) == 10
    assert len(set(CLASS_WORDS)) == 10 and all(w.isalpha() and w.islower() for w in CLASS_WORDS)


@pytest.mark.parametrize("compress", [True, False])
def test_a_given_folder_is_read_gz_or_plain(tmp_path, compress):
    write_fake_fashion_mnist(tmp_path, "train", per_class=2, compress=compress)
    images, labels = load_fashion_mnist("train", root=tmp_path)
    assert images.shape == (20, 28, 28) and labels.tolist() == [k % 10 for k in range(20)]


@pytest.mark.skipif(not (mnist.DEBIAN_ROOT / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_train_split_comes_from_debian():
    images, labels = load_fashion_mnist("train")
    assert images.shape == (60_000, 28, 28) and np.bincount(labels).tolist() == [6000] * 10


def test_missing_train_split_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist, "DEBIAN_ROOT", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        FashionCanvas(split="train")
    with pytest.raises(DatasetError, match="no train-images-idx3-ubyte"):
        load_fashion_mnist("train", root=tmp_path)


def test_corrupt_idx_files_are_refused(tmp_path):
    write_fake_fashion_mnist(tmp_path, "test", per_class=1, compress=False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetError, match="payload"):
        load_fashion_mnist("test", root=tmp_path)
    path.write_bytes(b"\0\0\0\0garbage")
    with pytest.raises(DatasetError, match="not an idx file"):
        load_fashion_mnist("test", root=str(tmp_path))


def test_unknown_split_is_refused():
    with pytest.raises(DatasetError, match="'train' and 'test'"):
        load_fashion_mnist("validation")
