"""The shared machinery of the Fashion-MNIST generators: parameters, per-sample seeding, ids, fingerprint."""

from __future__ import annotations

import hashlib
import json
import zlib
from abc import abstractmethod
from functools import cached_property, lru_cache
from typing import ClassVar
from urllib.parse import urlencode

import numpy as np
from attn_audit.storage.datasets.base import Dataset
from attn_audit.storage.datasets.errors import DatasetError
from attn_audit.storage.datasets.fashion.mnist import load_fashion_mnist
from attn_audit.storage.datasets.fashion.scene import Scene

SPLIT_CODES = {"test": 0, "train": 1}
DEFAULT_SIZES = {"test": 10_000, "train": 60_000}


class FashionSource:
    """The items a split draws from ("test": the bundled subset, "train": the full training set)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.by_class = [np.flatnonzero(labels == c) for c in range(10)]

    @cached_property
    def content_hash(self) -> str:
        return hashlib.sha256(self.images.tobytes() + self.labels.tobytes()).hexdigest()


@lru_cache(maxsize=4)
def fashion_source(split: str, root: str | None) -> FashionSource:
    return FashionSource(*load_fashion_mnist(split, root))


class FashionGenerator(Dataset):
    """Sample i is a pure function of (generator, version, split, seed, i) and the source items.

    Each sample gets its own generator `default_rng([seed, i, split code, generator code, stream])`, so
    any sample can be made alone, in any order, on any worker. The fingerprint hashes the generator's
    name, version and parameters and the source arrays instead of generating every sample; bump
    `version` whenever the samples for the same parameters change.

    `scene(i)` is sample i before rendering (background and item placements): what the ground truth is
    checked against.
    """

    name: ClassVar[str]
    version: ClassVar[int]
    params: ClassVar[tuple[str, ...]] = ("split", "n", "seed", "root")

    def __init__(self, split: str = "test", n: int | None = None, seed: int = 0, root: str | None = None):
        if split not in SPLIT_CODES:
            raise DatasetError(f"{self.name}: split must be one of {sorted(SPLIT_CODES)}, not {split!r}")
        n = DEFAULT_SIZES[split] if n is None else n
        if n < 1 or seed < 0:
            raise DatasetError(f"{self.name}: n must be >= 1 and seed >= 0 (got n={n}, seed={seed})")
        self.split, self.n, self.seed, self.root = split, n, seed, root
        query = {"split": split, "n": n, "seed": seed} | ({"root": root} if root is not None else {})
        self.ref = f"builtin:{self.name}?{urlencode(query)}"
        self.source = fashion_source(split, root)  # loaded now: a missing source is a whole-dataset error
        self._code = zlib.crc32(self.name.encode())

    def __len__(self) -> int:
        return self.n

    def __reduce__(self):
        # Pickle the parameters, not the source arrays: a worker reloads them from its own cache.
        return type(self), (self.split, self.n, self.seed, self.root)

    def _sample_id(self, i: int) -> str:
        return f"{self.name}/{self.split}/{i:06d}"

    @abstractmethod
    def scene(self, i: int) -> Scene: ...

    def rng(self, i: int, stream: int = 0) -> np.random.Generator:
        """Sample i's random stream; separate streams keep e.g. the question independent of the image."""
        return np.random.default_rng([self.seed, i, SPLIT_CODES[self.split], self._code, stream])

    def fingerprint(self) -> str:
        spec = {"generator": self.name, "version": self.version, "split": self.split, "n": self.n,
                "seed": self.seed, "source": self.source.content_hash}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
