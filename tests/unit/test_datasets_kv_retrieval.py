"""kv-retrieval: deterministic prompts of varying length whose ground truth is exactly the queried pair and the
query key, and a test split no training prompt ever falls in."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from attn_audit.storage.datasets import DatasetError, open_dataset
from attn_audit.storage.datasets.kv_retrieval import (
    KEY_WORDS,
    MAX_PAIRS,
    MIN_PAIRS,
    VALUE_WORDS,
    KvRetrieval,
    is_test_prompt,
)
from attn_audit.tasks.evaluate.ground_truth import candidates_and_truth
from hypothesis import given, settings
from hypothesis import strategies as st

examples = settings(max_examples=40, deadline=None)


@examples
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 9_999), split=st.sampled_from(["test", "train"]))
def test_a_sample_depends_only_on_split_seed_and_id(seed, index, split):
    first = KvRetrieval(split, seed=seed, n=10_000)[index]
    other = KvRetrieval(split, seed=seed, n=index + 1)
    other[0]  # noqa: B018  (another sample first: order must not matter)
    assert first == other[index] == pickle.loads(pickle.dumps(other))[index]
    assert first["id"] == f"kv-retrieval/{split}/{index:06d}" == other.sample_id(index)


@examples
@given(seed=st.integers(0, 2**32 - 1), index=st.integers(0, 9_999))
def test_ground_truth_is_the_queried_pair_and_the_query_key(seed, index):
    sample = KvRetrieval(seed=seed, n=10_000)[index]
    words, (pair, query) = sample["text"].split(), sample["ground_truth"]["text_tokens"]
    pairs = sample["ground_truth"]["pairs"]
    assert MIN_PAIRS <= pairs <= MAX_PAIRS and len(words) == pairs + 3
    table = dict(word.split("=") for word in words[:pairs])
    assert len(table) == pairs and set(table) <= set(KEY_WORDS) and set(table.values()) <= set(VALUE_WORDS)
    assert words[-3] == ";" and words[-1] == "?" and query == len(words) - 2 and pair < pairs
    assert words[pair] == f"{words[query]}={sample['label']}" and table[words[query]] == sample["label"]
    assert sample["label"] in KvRetrieval.label_names


def test_lengths_and_queried_positions_vary():
    samples = list(KvRetrieval(n=500))
    assert {s["ground_truth"]["pairs"] for s in samples} == set(range(MIN_PAIRS, MAX_PAIRS + 1))
    assert len({s["ground_truth"]["text_tokens"][0] for s in samples}) == MAX_PAIRS
    assert set(s["label"] for s in samples) == set(VALUE_WORDS)


def test_held_out_split_is_disjoint_from_training_prompts():
    test = {s["text"] for s in KvRetrieval("test", n=2_000)}
    train = {s["text"] for s in KvRetrieval("train", n=20_000, seed=1)}
    assert all(map(is_test_prompt, test)) and not any(map(is_test_prompt, train))
    assert not test & train
    assert len(train) > 15_000  # plenty of distinct prompts, short ones repeat


def test_reference_parameters_and_fingerprint():
    ref = "builtin:kv-retrieval?split=train&n=50&seed=3"
    data = open_dataset(ref)
    assert isinstance(data, KvRetrieval) and len(data) == 50 and data.ref == ref
    assert data.modalities == ("text",) and data.label_values() == set(VALUE_WORDS)
    assert data.fingerprint() == KvRetrieval("train", n=50, seed=3).fingerprint()
    assert len({data.fingerprint(), KvRetrieval("train", n=51, seed=3).fingerprint(),
                KvRetrieval("train", n=50, seed=4).fingerprint(), KvRetrieval("test", n=50, seed=3).fingerprint()}) == 4
    assert data[0] != KvRetrieval("train", n=50, seed=4)[0]
    with pytest.raises(DatasetError, match="split"):
        KvRetrieval("validation")
    with pytest.raises(DatasetError, match="n must be"):
        KvRetrieval(n=0)


def test_evaluation_reads_the_ground_truth_on_word_level_tokens():
    """A word-level tokenizer's tokens (after its BOS) are the prompt's words, so the evaluation's text ground truth
    marks exactly the two relevant tokens (the pair, the query key)."""
    sample = KvRetrieval(n=1)[0]
    tokens = ["<s>", *sample["text"].split()]
    special = np.array([True] + [False] * (len(tokens) - 1))
    relevance, truth = candidates_and_truth(sample, "text", np.arange(len(tokens), dtype=float), tokens, special)
    assert len(relevance) == len(tokens) - 1
    assert np.flatnonzero(truth).tolist() == sample["ground_truth"]["text_tokens"]
