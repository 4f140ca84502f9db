"""The Fashion-MNIST generators: deterministic per (split, seed, id), with correct ground truth."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
from attn_audit.storage.datasets import (
    ANSWER_VOCAB,
    CELL_NAMES,
    CLASS_WORDS,
    FashionCanvas,
    FashionCaption,
    FashionDetect,
    FashionVqa,
)
from attn_audit.storage.datasets.fashion.scene import NOISE_MAX, render, tight_box
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_datasets_fashion_mnist import write_fake_fashion_mnist

GENERATORS = [FashionCanvas, FashionVqa, FashionCaption, FashionDetect]
seeds = st.integers(0, 2**32 - 1)
indices = st.integers(0, 9_999)
examples = settings(max_examples=40, deadline=None)


@pytest.fixture(scope="module")
def tiny_train_root(tmp_path_factory) -> str:
    return str(write_fake_fashion_mnist(tmp_path_factory.mktemp("fashion"), "train", per_class=3))


def assert_same(a, b) -> None:
    """Deep equality for samples: dicts, lists, arrays (dtype and shape included)."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    else:
        assert type(a) is type(b) and a == b


@pytest.mark.parametrize("generator", GENERATORS)
@examples
@given(seed=seeds, index=indices)
def test_a_sample_depends_only_on_split_seed_and_id(generator, seed, index):
    first = generator(seed=seed)[index]
    other = generator(seed=seed, n=index + 1)
    other[0], other[-1]  # noqa: B018  (other samples first: order must not matter)
    assert_same(first, other[index])
    assert first["id"] == f"{generator.name}/test/{index:06d}" == other.sample_id(index)


@pytest.mark.parametrize("generator", GENERATORS)
def test_seeds_and_splits_give_different_samples(generator, tiny_train_root):
    base = generator(seed=0)[5]["image"]
    assert not np.array_equal(base, generator(seed=1)[5]["image"])
    assert not np.array_equal(base, generator(seed=0)[6]["image"])
    train = generator(split="train", root=tiny_train_root, n=10)
    assert train[5]["id"] == f"{generator.name}/train/000005"
    assert not np.array_equal(base, train[5]["image"])


@pytest.mark.parametrize("generator", GENERATORS)
def test_fingerprint_follows_parameters_and_pickles_travel_light(generator):
    data = generator(n=50, seed=3)
    assert data.fingerprint() == generator(n=50, seed=3).fingerprint()
    assert data.fingerprint() != generator(n=51, seed=3).fingerprint()
    assert data.fingerprint() != generator(n=50, seed=4).fingerprint()
    payload = pickle.dumps(data)
    assert len(payload) < 1_000  # parameters only, not the source arrays
    assert_same(pickle.loads(payload)[7], data[7])


def test_positions_behave_like_a_sequence():
    data = FashionCanvas(n=3)
    assert len(data) == 3 and [s["id"] for s in data] == [data.sample_id(i) for i in range(3)]
    assert_same(data[-1], data[2])
    with pytest.raises(IndexError):
        data[3]
    with pytest.raises(IndexError):
        data.sample_id(-4)


@examples
@given(seed=seeds, index=indices)
def test_canvas_mask_is_exactly_the_pasted_item(seed, index):
    data = FashionCanvas(seed=seed)
    sample, scene = data[index], data.scene(index)
    image, truth = sample["image"], sample["ground_truth"]
    mask = truth["image_mask"]
    (place,) = scene.placements
    item = data.source.images[place.source_index]
    assert image.dtype == np.uint8 and image.shape == mask.shape == (64, 64) and mask.dtype == bool
    assert sample["label"] == place.label == data.source.labels[truth["source_indices"][0]]
    # Outside the mask: the clutter-only canvas; inside: the item's own pixels, all nonzero.
    assert np.array_equal(image[~mask], scene.background[~mask])
    x0, y0 = place.x, place.y
    assert np.array_equal(mask[y0:y0 + 28, x0:x0 + 28], item > 0) and mask.sum() == (item > 0).sum()
    assert np.array_equal(image[y0:y0 + 28, x0:x0 + 28][item > 0], item[item > 0])
    assert truth["box"] == tight_box(mask)
    bx0, by0, bx1, by1 = truth["box"]
    assert mask[by0:by1, bx0:bx1].sum() == mask.sum()
    # Clutter never reaches the item's paste square: only noise shows there.
    assert scene.background[y0:y0 + 28, x0:x0 + 28].max() <= NOISE_MAX


def test_canvas_has_clutter_and_uses_every_class():
    data = FashionCanvas(n=300)
    brightest_background = [data.scene(i).background.max() for i in range(50)]
    assert min(brightest_background) > NOISE_MAX  # every canvas carries some blobs or strokes
    assert set(data[i]["label"] for i in range(300)) == set(range(10))


@examples
@given(seed=seeds, index=indices)
def test_vqa_answer_matches_the_referenced_cells(seed, index):
    data = FashionVqa(seed=seed)
    sample = data[index]
    truth, words = sample["ground_truth"], sample["text"].split()
    answer, classes, cells = ANSWER_VOCAB[sample["label"]], truth["classes"], truth["cells"]
    assert data.label_names == ANSWER_VOCAB and len(set(classes)) == 4
    assert all(data.source.labels[s] == c for s, c in zip(truth["source_indices"], classes, strict=True))
    key_words = " ".join(words[k] for k in truth["text_tokens"])
    if words[0] == "what":
        assert key_words == CELL_NAMES[cells[0]] and answer == CLASS_WORDS[classes[cells[0]]]
    elif words[0] == "is":
        asked = CLASS_WORDS.index(key_words)
        assert answer == ("yes" if asked in classes else "no")
        assert cells == ([classes.index(asked)] if asked in classes else [])
    else:
        assert words[:3] == ["where", "is", "the"]
        assert classes[cells[0]] == CLASS_WORDS.index(key_words) and answer == CELL_NAMES[cells[0]]
    # The mask is the referenced cells' item pixels and nothing else.
    _, masks = render(data.scene(index), data.source.images)
    assert np.array_equal(truth["image_mask"], masks[cells].any(axis=0))


def test_vqa_templates_and_answers_are_balanced():
    samples = [FashionVqa()[i] for i in range(600)]
    kinds = {s["text"].split()[0] for s in samples}
    answers = [ANSWER_VOCAB[s["label"]] for s in samples]
    assert kinds == {"what", "is", "where"}
    assert 60 < answers.count("yes") < 140 and 60 < answers.count("no") < 140
    assert set(answers) == set(ANSWER_VOCAB)


@examples
@given(seed=seeds, index=indices)
def test_caption_word_k_names_cell_k(seed, index):
    data = FashionCaption(seed=seed)
    sample = data[index]
    truth = sample["ground_truth"]
    assert sample["text"].split() == [CLASS_WORDS[c] for c in truth["classes"]]
    assert truth["word_cells"] == [0, 1, 2, 3] and "label" not in sample and data.label_names is None
    cell_masks, image = truth["cell_masks"], sample["image"]
    assert cell_masks.shape == (4, 56, 56) and image.shape == (56, 56)
    for cell, (mask, source) in enumerate(zip(cell_masks, truth["source_indices"], strict=True)):
        top, left = 28 * (cell // 2), 28 * (cell % 2)
        rows, cols = slice(top, top + 28), slice(left, left + 28)
        item = data.source.images[source]
        assert data.source.labels[source] == truth["classes"][cell]
        assert np.array_equal(mask[rows, cols], item > 0) and mask.sum() == (item > 0).sum()
        assert np.array_equal(image[rows, cols][item > 0], item[item > 0])


@examples
@given(seed=seeds, index=indices)
def test_detect_boxes_hold_their_masks_and_never_overlap(seed, index):
    data = FashionDetect(seed=seed)
    sample = data[index]
    truth = sample["ground_truth"]
    boxes, masks, classes = truth["boxes"], truth["masks"], truth["classes"]
    assert 1 <= len(boxes) == len(masks) == len(classes) <= 4 and masks.shape[1:] == (96, 96)
    assert masks.sum(axis=0).max() <= 1  # masks are disjoint
    scene = data.scene(index)
    for box, mask, cls, place in zip(boxes, masks, classes, scene.placements, strict=True):
        x0, y0, x1, y1 = box
        assert 0 <= x0 < x1 <= 96 and 0 <= y0 < y1 <= 96 and box == tight_box(mask)
        item = data.source.images[place.source_index]
        assert data.source.labels[place.source_index] == cls == place.label
        assert np.array_equal(mask[place.y:place.y + 28, place.x:place.x + 28], item > 0)
        assert np.array_equal(sample["image"][mask], item[item > 0])
    assert truth["source_indices"] == [p.source_index for p in scene.placements]
    for a in range(len(boxes)):
        for b in range(a + 1, len(boxes)):
            (ax0, ay0, ax1, ay1), (bx0, by0, bx1, by1) = boxes[a], boxes[b]
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0


def test_detect_uses_one_to_four_items():
    counts = {len(FashionDetect()[i]["ground_truth"]["classes"]) for i in range(100)}
    assert counts == {1, 2, 3, 4}


@pytest.mark.parametrize("generator", GENERATORS)
def test_generating_a_sample_takes_well_under_a_millisecond(generator):
    data = generator()
    data[0]
    start = time.perf_counter()
    for i in range(200):
        data[i]
    per_sample = (time.perf_counter() - start) / 200
    assert per_sample < 1e-3
