"""Fashion-MNIST (Zalando, MIT): the bundled test subset and the full set from Debian or a folder."""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np
from attn_audit.storage.datasets.errors import DatasetError

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# One whitespace-free word per class, so that a caption or question word maps to exactly one class.
CLASS_WORDS = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
BUNDLED_SUBSET = Path(__file__).resolve().parent.parent / "data" / "fashion_mnist_subset.npz"
ITEM_SIZE = 28

_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_IMAGES_MAGIC, _LABELS_MAGIC = 2051, 2049


def load_fashion_mnist(split: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 28, 28), labels int64 (N,)), read-only and cached per process.

    - `split="test"`, no root: the subset bundled with this package (the first test images).
    - `split="train"`, no root: the full training set from Debian's `dataset-fashion-mnist`.
    - any split with `root`: the full split from the idx files (.gz or plain) in that folder.
    """
    if split not in _IDX_FILES:
        raise DatasetError(f"Fashion-MNIST has splits 'train' and 'test', not {split!r}")
    if root is None and split == "test":
        return _load_bundled(BUNDLED_SUBSET)
    return _load_idx_pair(Path(root) if root is not None else DEBIAN_ROOT, split)


@lru_cache(maxsize=2)
def _load_bundled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise DatasetError(f"the bundled Fashion-MNIST subset is missing: {path} "
                           "(regenerate it with scripts/make_fashion_subset.py)")
    with np.load(path) as data:
        return _read_only(data["images"], data["labels"].astype(np.int64))


@lru_cache(maxsize=4)
def _load_idx_pair(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_name, labels_name = _IDX_FILES[split]
    images = _read_idx(_find_idx(root, images_name, split), _IMAGES_MAGIC)
    labels = _read_idx(_find_idx(root, labels_name, split), _LABELS_MAGIC).astype(np.int64)
    if len(images) != len(labels):
        raise DatasetError(f"Fashion-MNIST {split} in {root}: {len(images)} images but {len(labels)} labels")
    return _read_only(images, labels)


def _find_idx(root: Path, name: str, split: str) -> Path:
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    hint = ("install it with `apt-get install dataset-fashion-mnist`" if root == DEBIAN_ROOT
            else "pass the folder that holds the Fashion-MNIST idx files")
    raise DatasetError(f"Fashion-MNIST {split} split not found: no {name}[.gz] in {root}; {hint}")


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (big-endian header: magic, then one uint32 per dimension; uint8 payload)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err}") from None
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header or int.from_bytes(raw[:4], "big") != magic:
        raise DatasetError(f"{path} is not an idx file with magic number {magic}")
    shape = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    if len(raw) - header != int(np.prod(shape)):
        raise DatasetError(f"{path}: header says shape {shape}, payload has {len(raw) - header} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _read_only(images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    images, labels = np.ascontiguousarray(images, dtype=np.uint8), np.ascontiguousarray(labels)
    if images.ndim != 3 or images.shape[1:] != (ITEM_SIZE, ITEM_SIZE) or labels.shape != images.shape[:1]:
        raise DatasetError(f"Fashion-MNIST arrays have shapes {images.shape} and {labels.shape}, "
                           f"expected (N, {ITEM_SIZE}, {ITEM_SIZE}) and (N,)")
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels
