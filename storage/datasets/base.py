"""The contract every dataset honours: random access by position, stable ids, a content fingerprint."""

from __future__ import annotations

import hashlib
import json
import operator
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from attn_audit.storage.datasets.errors import SampleError

MODALITY_ORDER = ("image", "text")


class Dataset(ABC):
    """A sequence of samples addressed by position; shards are contiguous position ranges.

    A sample is a plain dict holding only the keys that apply:
    `{"id": str, "image": np.uint8 (H, W) | (H, W, 3) array, encoded bytes or a file path,
    "text": str, "label": int | str | None, "ground_truth": dict}`.
    """

    ref: str
    name: str
    label_names: list[str] | None
    modalities: tuple[str, ...]

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _sample(self, i: int) -> dict:
        """The sample at a valid, non-negative position; may raise SampleError."""

    @abstractmethod
    def _sample_id(self, i: int) -> str:
        """The id at a valid, non-negative position, without loading the sample."""

    @abstractmethod
    def fingerprint(self) -> str:
        """A sha256 hex digest that changes whenever any sample id or content changes."""

    def __getitem__(self, i: int) -> dict:
        return self._sample(self._position(i))

    def sample_id(self, i: int) -> str:
        return self._sample_id(self._position(i))

    def label_values(self) -> set[int | str]:
        """Every distinct label of the dataset, read without decoding samples (for checks before a run). This
        default suits datasets whose labels are their `label_names` or index them."""
        return set(self.label_names or ())

    def __iter__(self) -> Iterator[dict]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ref!r}: {len(self)} samples>"

    def _position(self, i: int) -> int:
        i, n = operator.index(i), len(self)
        if not -n <= i < n:
            raise IndexError(f"position {i} is outside {self.name} ({n} samples)")
        return i + n if i < 0 else i


def sha256_of_parts(parts: Iterable[bytes | str]) -> str:
    """Hash a sequence of parts, length-prefixed so that part boundaries cannot be shifted."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def file_bytes_or_marker(path: str | Path) -> bytes:
    """A file's bytes for fingerprints; a missing file hashes as a marker (it is a SampleError on read)."""
    try:
        return Path(path).read_bytes()
    except OSError:
        return b"\0missing\0"


def content_fingerprint(dataset: Dataset) -> str:
    """sha256 over the label names and every sample's id and content, image files by their bytes.

    A sample that fails contributes its error message, so fixing a broken row changes the fingerprint.
    """
    def parts() -> Iterator[bytes | str]:
        yield json.dumps(dataset.label_names)
        for i in range(len(dataset)):
            try:
                yield from _sample_parts(dataset[i])
            except SampleError as err:
                yield from ("error", err.sample_id, err.message)

    return sha256_of_parts(parts())


def _sample_parts(sample: dict) -> Iterator[bytes | str]:
    for key in sorted(sample):
        value = sample[key]
        yield key
        if key == "image" and isinstance(value, str):
            yield file_bytes_or_marker(value)  # a path: its content counts, not where it lives
        else:
            yield from _value_parts(value)


def _value_parts(value) -> Iterator[bytes | str]:
    if isinstance(value, dict):
        for key in sorted(value):
            yield key
            yield from _value_parts(value[key])
    elif isinstance(value, np.ndarray):
        yield f"{value.dtype}{value.shape}"
        yield np.ascontiguousarray(value).tobytes()
    elif isinstance(value, bytes):
        yield value
    else:  # str, int, None and JSON-like lists
        yield json.dumps(value)
