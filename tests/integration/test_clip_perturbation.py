"""CLIP's perturbation tests (SPEC §3, dual encoders): one tower's tokens removed, the pair scored by its similarity
against the batch's candidates of the other tower, its own partner in column 0. Every entry equals the stock CLIPModel
on the reduced input; the pooled EOT token, BOS and padding are never removed; the trained built-in passes the
positive-vs-negative check; the evaluation writes CLIP's perturbation rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import transformers as T
from attn_audit.models.perturbation import perturbation_curves
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store
from attn_audit.tasks.evaluate import EvalSettings, evaluate_run
from attn_audit.tasks.evaluate.perturbation_job import auc

from attn_audit import models
from tests import tiny_bimodal
from tests.integration.test_evaluate import write_run
from tests.tiny_models import WORDS, bert_tokenizer

torch.set_num_threads(1)
IMAGE_STEPS = [0.0, 0.1, 0.5, 0.9]  # of 16 patches: 0, 1, 8, 14 removed
TEXT_STEPS = [0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0]


def _argmax_rule_clip():
    """A CLIP from before transformers PR #24773 (eos_token_id 2: the text tower pools the highest id), with a
    tokenizer whose [SEP] is its highest id, as CLIP's <|endoftext|> is."""
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[MASK]", *WORDS, "[SEP]"])}
    tokenizer = T.BertTokenizer(vocab=vocab, model_max_length=64)
    model = tiny_bimodal.clip()
    model.config.text_config.eos_token_id = model.text_model.eos_token_id = 2
    return models.wrap(model, device="cpu", tokenizer=tokenizer)


@pytest.fixture(scope="module", params=["eos_id_rule", "argmax_rule"])
def m(request):
    if request.param == "argmax_rule":
        return _argmax_rule_clip()
    return models.wrap(tiny_bimodal.clip(), device="cpu", tokenizer=bert_tokenizer())


@pytest.fixture(scope="module")
def eos_m():
    return models.wrap(tiny_bimodal.clip(), device="cpu", tokenizer=bert_tokenizer())


# -- the stock model on the reduced input, one sample at a time ------------------------------------------------

def _similarities(model, perturbed: torch.Tensor, candidates: torch.Tensor, own: int) -> torch.Tensor:
    """logit_scale · cosine of one perturbed embedding against the candidates, its own partner first."""
    unit = lambda x: x / x.norm(dim=-1, keepdim=True)  # noqa: E731
    sims = (unit(perturbed) @ unit(candidates).T)[0] * model.logit_scale.exp()
    return torch.cat([sims[own:own + 1], sims[:own], sims[own + 1:]])


def _image_features_dropped(model, pixels: torch.Tensor, kept: list[int]) -> torch.Tensor:
    """The vision tower's stock modules with only [CLS] and the `kept` patch tokens after the embeddings."""
    vision = model.vision_model
    h = vision.embeddings(pixels[None])[:, [0, *[1 + j for j in kept]]]
    h = vision.encoder(inputs_embeds=vision.pre_layrnorm(h)).last_hidden_state
    return model.visual_projection(vision.post_layernorm(h[:, 0]))


def _image_features_zeroed(m, pixels: torch.Tensor, removed: set[int]) -> torch.Tensor:
    """The stock model on the image with the removed patches black: (0 − mean) / std per channel."""
    pixels, patch, grid = pixels.clone(), m.adapter.transform.size // m.adapter.grid, m.adapter.grid
    black = -torch.tensor(m.adapter.transform.mean) / torch.tensor(m.adapter.transform.std)
    for j in removed:
        r, c = divmod(j, grid)
        pixels[:, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch] = black[:, None, None]
    return m.model.get_image_features(pixel_values=pixels[None]).pooler_output


def _text_features(model, ids: list[int]) -> torch.Tensor:
    """The stock text tower on one unpadded token sequence."""
    return model.get_text_features(input_ids=torch.tensor([ids])).pooler_output


def _alone(m, samples):
    """Every sample's image and text features, each encoded alone (no padding): the candidates by hand."""
    images, texts = [], []
    for sample in samples:
        single = m.preprocess([sample])
        images.append(m.model.get_image_features(pixel_values=single["pixel_values"]).pooler_output)
        texts.append(_text_features(m.model, single["input_ids"][0].tolist()))
    return torch.cat(images), torch.cat(texts)


def _removed(relevance, removable: list[int], p: float, direction: str) -> set[int]:
    """The first floor(p · n) removable positions by relevance (ties: lower index)."""
    key = (lambda j: (-relevance[j], j)) if direction == "positive" else (lambda j: (relevance[j], j))
    order = sorted(removable, key=key)
    return set(order[:int(np.floor(p * len(order) + 1e-9))])


def _check_entry(curves, e, d, s, sims):
    assert curves.score[e, d, s] == pytest.approx(sims[0].item(), abs=1e-5)
    assert curves.probability[e, d, s] == pytest.approx(torch.softmax(sims, 0)[0].item(), abs=1e-5)
    assert curves.prediction[e, d, s] == int(sims.argmax())


# -- (1) every entry is the stock model on the reduced input -------------------------------------------------

def test_unperturbed_rows_are_the_stock_logits_with_the_partner_first(m):
    samples = tiny_bimodal.pairs(4)
    batch = m.preprocess(samples)
    with torch.no_grad():
        out = m.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      pixel_values=batch["pixel_values"])
        rows = torch.arange(4)
        image = m.adapter.perturbed_logits(batch, rows, torch.ones(4, 16, dtype=torch.bool), "image", "drop")
        text = m.adapter.perturbed_logits(batch, rows, m.adapter.removable_tokens(batch, "text"), "text", "drop")
    for i in range(4):
        order = [i, *[j for j in range(4) if j != i]]
        torch.testing.assert_close(image[i], out.logits_per_image[i, order], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(text[i], out.logits_per_text[i, order], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mode", ["drop", "zero"])
def test_every_image_entry_equals_the_stock_model_on_the_reduced_image(m, mode):
    samples = tiny_bimodal.pairs(4)
    batch = m.preprocess(samples)
    maps = list(np.random.default_rng(1).standard_normal((4, 4, 4)))
    curves = perturbation_curves(m, batch, "image", maps, [0] * 4, IMAGE_STEPS, mode=mode, max_rows=7)
    _, texts = _alone(m, samples)
    with torch.no_grad():
        for e in range(4):
            for d, direction in enumerate(curves.directions):
                for s, p in enumerate(IMAGE_STEPS):
                    removed = _removed(maps[e].ravel(), list(range(16)), p, direction)
                    pixels = batch["pixel_values"][e]
                    image = _image_features_dropped(m.model, pixels, [j for j in range(16) if j not in removed]) \
                        if mode == "drop" else _image_features_zeroed(m, pixels, removed)
                    _check_entry(curves, e, d, s, _similarities(m.model, image, texts, e))


def test_every_text_entry_equals_the_stock_model_on_the_shortened_text(m):
    samples = tiny_bimodal.pairs(4)
    batch = m.preprocess(samples)
    assert not batch["attention_mask"].all()
    maps = [np.random.default_rng(e).standard_normal(n) for e, n in enumerate(batch.meta["lengths"])]
    curves = perturbation_curves(m, batch, "text", maps, [0] * 4, TEXT_STEPS, max_rows=5)
    images, _ = _alone(m, samples)
    removable = m.adapter.removable_tokens(batch, "text")
    with torch.no_grad():
        for e in range(4):
            ids = batch["input_ids"][e, :batch.meta["lengths"][e]].tolist()
            positions = removable[e].nonzero()[:, 0].tolist()
            for d, direction in enumerate(curves.directions):
                for s, p in enumerate(TEXT_STEPS):
                    removed = _removed(maps[e], positions, p, direction)
                    text = _text_features(m.model, [t for j, t in enumerate(ids) if j not in removed])
                    _check_entry(curves, e, d, s, _similarities(m.model, text, images, e))


def test_a_hand_built_keep_mask_removes_exactly_those_tokens(eos_m):
    m = eos_m
    samples = tiny_bimodal.pairs(3)
    batch = m.preprocess(samples)
    images, texts = _alone(m, samples)
    keep = torch.ones(1, 16, dtype=torch.bool)
    keep[0, [0, 5, 15]] = False
    with torch.no_grad():
        got = m.adapter.perturbed_logits(batch, torch.tensor([2]), keep, "image", "drop")[0]
        kept = [j for j in range(16) if j not in (0, 5, 15)]
        expected = _similarities(m.model, _image_features_dropped(m.model, batch["pixel_values"][2], kept), texts, 2)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        words = samples[1]["text"].split()
        keep = m.adapter.removable_tokens(batch, "text")[1:2].clone()
        keep[0, 1] = False  # the first word ([CLS] is position 0)
        got = m.adapter.perturbed_logits(batch, torch.tensor([1]), keep, "text", "drop")[0]
        shortened = m.preprocess([{**samples[1], "text": " ".join(words[1:])}])["input_ids"][0].tolist()
        torch.testing.assert_close(got, _similarities(m.model, _text_features(m.model, shortened), images, 1),
                                   atol=1e-5, rtol=1e-5)


# -- (2) special tokens and padding ---------------------------------------------------------------------------

def test_eot_bos_and_padding_are_never_removable(m):
    batch = m.preprocess(tiny_bimodal.pairs(5))
    removable = m.adapter.removable_tokens(batch, "text")
    eot = m.adapter.eot_index(batch["input_ids"])
    for i, n in enumerate(batch.meta["lengths"]):
        assert int(eot[i]) == n - 1, "the pooled token is the last real one ([SEP])"
        assert removable[i].nonzero()[:, 0].tolist() == list(range(1, n - 1)), "only the words"
    assert m.adapter.removable_tokens(batch, "image").shape == (5, 16)


def test_with_all_words_removed_the_pair_still_pools_its_eot(m):
    """p = 1 leaves [CLS] [SEP]: the stock model on exactly that, whichever rule finds the EOT."""
    samples = tiny_bimodal.pairs(3)
    batch = m.preprocess(samples)
    images, _ = _alone(m, samples)
    with torch.no_grad():
        got = m.adapter.perturbed_logits(batch, torch.arange(3), torch.zeros_like(batch["input_ids"], dtype=torch.bool),
                                         "text", "drop")
        ends = [int(batch["input_ids"][0, 0]), int(batch["input_ids"][0, batch.meta["lengths"][0] - 1])]
        for i in range(3):
            torch.testing.assert_close(got[i], _similarities(m.model, _text_features(m.model, ends), images, i),
                                       atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("modality", "mode"), [("image", "drop"), ("image", "zero"), ("text", "drop")])
def test_a_padded_batch_scores_each_pair_as_alone(eos_m, modality, mode):
    """The similarity does not depend on the gallery, so the batched scores equal each pair's alone; alone, the pair
    is its only candidate (probability 1, retrieved)."""
    m = eos_m
    samples = tiny_bimodal.pairs(5)
    batch = m.preprocess(samples)
    exps = models.explain(m, batch, method="chefer2021")
    steps = IMAGE_STEPS if modality == "image" else TEXT_STEPS
    together = perturbation_curves(m, batch, modality, [x.relevance[modality] for x in exps], [0] * 5, steps,
                                   mode=mode)
    np.testing.assert_allclose(together.score[:, :, 0], [[x.score] * 2 for x in exps], atol=1e-5)
    for e, (sample, exp) in enumerate(zip(samples, exps)):
        alone = perturbation_curves(m, m.preprocess([sample]), modality, [exp.relevance[modality]], [0], steps,
                                    mode=mode)
        np.testing.assert_allclose(together.score[e], alone.score[0], atol=1e-5)
        np.testing.assert_array_equal(together.removed[e], alone.removed[0])
        assert (alone.probability == 1).all() and (alone.prediction == 0).all()


@pytest.mark.parametrize("modality", ["image", "text"])
def test_the_candidates_are_encoded_once_per_test_and_not_kept_after(eos_m, modality, monkeypatch):
    """However many passes a test takes, the other tower encodes the batch's candidates once; the next test (another
    batch) encodes its own."""
    m = eos_m
    other = "_text_features" if modality == "image" else "_image_features"
    encoded = []
    encode = getattr(m.adapter, other)
    monkeypatch.setattr(m.adapter, other, lambda *a: encoded.append(a[0].shape[0]) or encode(*a))
    steps = IMAGE_STEPS if modality == "image" else TEXT_STEPS
    for n in (5, 3):
        batch = m.preprocess(tiny_bimodal.pairs(n))
        maps = [x.relevance[modality] for x in models.explain(m, batch, method="chefer2021")]
        encoded.clear()
        perturbation_curves(m, batch, modality, maps, [0] * n, steps, mode="drop", max_rows=4)  # several passes
        assert encoded == [n]
    assert m.adapter._candidates_of is None


# -- (3) the trained built-in ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_fashion_clip_positive_removal_hurts_more_than_negative():
    """builtin:fashion-clip with chefer2021 maps on 64 held-out pairs (64 candidates): removing the most relevant
    patches / words first lowers both the similarity and the retrieval accuracy faster than the least relevant.
    Measured: accuracy AUC positive / negative 24.4 / 71.6 (patches dropped), 32.3 / 54.8 (zeroed), 19.9 / 25.1
    (words: four per caption, each naming a quadrant, so one removed already loses most retrievals)."""
    m = models.load("builtin:fashion-clip", device="cpu")
    data = open_dataset("builtin:fashion-caption?split=test&n=64&seed=7")
    batch = m.preprocess([data[i] for i in range(64)])
    exps = models.explain(m, batch, method="chefer2021")
    patch_steps = [i / 10 for i in range(10)]
    for modality, steps, mode in (("image", patch_steps, "drop"), ("image", patch_steps, "zero"),
                                  ("text", TEXT_STEPS, "drop")):
        c = perturbation_curves(m, batch, modality, [x.relevance[modality] for x in exps], [0] * 64, steps,
                                mode=mode)
        accuracy = (c.prediction == 0).mean(0)  # (directions, steps): retrieves its own caption / image
        similarity = c.score.mean(0)
        assert accuracy[0, 0] == accuracy[1, 0] >= 0.9
        assert auc(steps, accuracy[0]) + 3 < auc(steps, accuracy[1]), (modality, mode)
        assert auc(steps, similarity[0]) < auc(steps, similarity[1]), (modality, mode)


# -- (4) the evaluation ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluation_writes_clip_perturbation_rows_for_both_towers(tmp_path):
    store = Store.open(tmp_path / "store", create=True)
    data_ref = "builtin:fashion-caption?n=6"
    run_id = write_run(store, "builtin:fashion-clip", data_ref, methods=("chefer2021",))
    for mode, suffix in (("drop", ""), ("zero", "_zero")):
        s = evaluate_run(store, run_id, tests="perturbation", batch_size=4, device="cpu",
                         settings=EvalSettings(resamples=50, perturbation_mode=mode))
        assert not any("not available" in note for note in s.notes), s.notes
        metrics = store.table("metrics", run_id=run_id).to_pylist()
        rows = [r for r in metrics if r["sample_id"] is not None]
        for modality in ("image", "text"):
            test = suffix if modality == "image" else ""
            names = {r["metric"] for r in rows if r["modality"] == modality}
            assert {f"auc_positive{test}", f"auc_negative{test}", f"prob_auc_positive{test}",
                    f"prob_auc_negative{test}"} <= names, (modality, names)
        assert all(json.loads(r["details"])["against"] == "prediction" for r in rows if r["metric"].startswith("auc_"))
        assert not any(r["metric"] == "skipped" and "not available" in (r["details"] or "") for r in metrics)
    _step_zero_is_retrieval_among_the_evaluation_batch(store, run_id, data_ref)


def _step_zero_is_retrieval_among_the_evaluation_batch(store, run_id, data_ref):
    """Unperturbed, accuracy = whether the pair's image retrieves its caption among the evaluation batch's pairs
    (two shards of 4 + 2, batch_size 4: galleries of 4 and 2)."""
    m = models.load("builtin:fashion-clip", device="cpu")
    data = open_dataset(data_ref)
    retrieved = {}
    for lo, hi in ((0, 4), (4, 6)):
        batch = m.preprocess([data[i] for i in range(lo, hi)])
        with torch.no_grad():
            logits = m.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             pixel_values=batch["pixel_values"]).logits_per_image
        retrieved |= {sid: float(logits[i].argmax() == i) for i, sid in enumerate(batch.sample_ids)}
    curves = store.table("perturbation_curves", run_id=run_id).to_pylist()
    first = [r for r in curves if r["sample_id"] is not None and r["modality"] == "image" and r["step"] == 0]
    assert len(first) == 6 * 2 * 2  # samples × directions × modes
    assert all(r["accuracy"] == retrieved[r["sample_id"]] for r in first)
