"""`kv-retrieval`: synthetic key–value prompts whose answer is the value of the queried key, e.g.
"k3=v7 k1=v2 k5=v0 ; k1 ?" → "v2". Every pair is one whitespace-separated word (as are ";", the query key and "?"),
so word positions are token positions for a word-level tokenizer (and `ground_truth["text_tokens"]` means what it
does for fashion-vqa).

Version 2: pairs are single words. Version 1 spelled them "k3 = v7" (three words), which a 2-layer model must first
bind across positions; tiny Llamas trained on it plateaued at choosing any of the prompt's values (see the README)."""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import ClassVar
from urllib.parse import urlencode

import numpy as np
from attn_audit.storage.datasets.base import Dataset
from attn_audit.storage.datasets.errors import DatasetError

KEY_WORDS = [f"k{i}" for i in range(16)]
VALUE_WORDS = [f"v{i}" for i in range(16)]
SEPARATOR_WORDS = [";", "?"]
PAIR_WORDS = [f"{k}={v}" for k in KEY_WORDS for v in VALUE_WORDS]
PROMPT_WORDS = [*KEY_WORDS, *VALUE_WORDS, *SEPARATOR_WORDS, *PAIR_WORDS]
MIN_PAIRS, MAX_PAIRS = 2, 12
SPLIT_CODES = {"test": 0, "train": 1}
DEFAULT_SIZES = {"test": 1_000, "train": 100_000}
TEST_SHARE = 5  # one prompt in five (by a hash of its text) belongs to the test split


def is_test_prompt(text: str) -> bool:
    """The split is fixed by content, so no prompt of one split ever occurs in the other, whatever the seeds."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") % TEST_SHARE == 0


def draw_prompt(rng: np.random.Generator, max_pairs: int = MAX_PAIRS) -> tuple[list[str], str, list[int]]:
    """(prompt words, answer, positions of the queried pair and of the query key): 2–max_pairs pairs with distinct
    keys (one answer per query), values drawn with replacement."""
    n = int(rng.integers(MIN_PAIRS, max_pairs + 1))
    keys = rng.choice(len(KEY_WORDS), size=n, replace=False)
    values = rng.integers(len(VALUE_WORDS), size=n)
    asked = int(rng.integers(n))
    words = [f"{KEY_WORDS[k]}={VALUE_WORDS[v]}" for k, v in zip(keys, values)]
    words += [";", KEY_WORDS[keys[asked]], "?"]
    return words, VALUE_WORDS[values[asked]], [asked, n + 1]


class KvRetrieval(Dataset):
    """text = the prompt; label = the answer word (one of `label_names` = VALUE_WORDS).

    ground_truth: {"text_tokens": [word positions of the queried pair and of the query key],
    "pairs": number of key–value pairs}. Sample i is a pure function of (split, seed, i): its own generator
    draws prompts until one falls in the split (`is_test_prompt`).
    """

    name = "kv-retrieval"
    version = 2
    modalities = ("text",)
    label_names = list(VALUE_WORDS)
    params: ClassVar[tuple[str, ...]] = ("split", "n", "seed")

    def __init__(self, split: str = "test", n: int | None = None, seed: int = 0):
        if split not in SPLIT_CODES:
            raise DatasetError(f"{self.name}: split must be one of {sorted(SPLIT_CODES)}, not {split!r}")
        n = DEFAULT_SIZES[split] if n is None else n
        if n < 1 or seed < 0:
            raise DatasetError(f"{self.name}: n must be >= 1 and seed >= 0 (got n={n}, seed={seed})")
        self.split, self.n, self.seed = split, n, seed
        self.ref = f"builtin:{self.name}?{urlencode({'split': split, 'n': n, 'seed': seed})}"
        self._code = zlib.crc32(self.name.encode())

    def __len__(self) -> int:
        return self.n

    def _sample_id(self, i: int) -> str:
        return f"{self.name}/{self.split}/{i:06d}"

    def _sample(self, i: int) -> dict:
        rng = np.random.default_rng([self.seed, i, SPLIT_CODES[self.split], self._code])
        while True:
            words, answer, relevant = draw_prompt(rng)
            text = " ".join(words)
            if is_test_prompt(text) == (self.split == "test"):
                break
        return {"id": self._sample_id(i), "text": text, "label": answer,
                "ground_truth": {"text_tokens": relevant, "pairs": len(words) - 3}}

    def fingerprint(self) -> str:
        spec = {"generator": self.name, "version": self.version, "split": self.split, "n": self.n, "seed": self.seed}
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
