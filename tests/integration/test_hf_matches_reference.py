"""Stock HF models: the batched engine equals the independent per-sample reference (tests/reference)."""

import numpy as np
import pytest
import torch

from attn_audit import models
from tests import tiny_models
from tests.reference.hf import reference_classifier_row

METHODS = models.default_methods()


def reference_row(m, sample_inputs, method, readout=0):
    row = reference_classifier_row(m.model, sample_inputs, method=method, readout=readout).float()
    if method == "attention_sum":  # the reported map sums to 1 once the readout entry is 0
        row = row / row.sum()
    return row.numpy()


@pytest.mark.parametrize("build", [tiny_models.vit, tiny_models.deit], ids=["vit", "deit"])
def test_image_classifiers_match_reference_per_sample(build):
    m = models.wrap(build(), device="cpu")
    samples = tiny_models.images(4)
    batch = m.preprocess(samples)
    n_special = 2 if "DeiT" in type(m.model).__name__ else 1
    for method in METHODS:
        exps = models.explain(m, batch, method=method)
        assert [e.sample_id for e in exps] == [s["id"] for s in samples]
        for i, exp in enumerate(exps):
            ref = reference_row(m, {"pixel_values": batch["pixel_values"][i:i + 1]}, method)
            got = exp.relevance["image"]
            assert got.shape == (4, 4)
            np.testing.assert_allclose(got.ravel(), ref[n_special:], atol=1e-5, err_msg=f"{method} sample {i}")


@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_text_classifiers_match_reference_on_padded_batches(kind, tmp_path):
    model, tok = tiny_models.text_model(kind)
    m = models.wrap(model, tokenizer=tok, device="cpu")
    samples = tiny_models.texts(5)
    batch = m.preprocess(samples)
    assert not batch["attention_mask"].all(), "the batch should be padded"
    for method in METHODS:
        for i, exp in enumerate(models.explain(m, batch, method=method)):
            single = m.preprocess([samples[i]])
            ref = reference_row(m, dict(single), method)
            got = exp.relevance["text"]
            assert len(got) == len(exp.tokens["text"]) == len(ref)
            np.testing.assert_allclose(got, ref, atol=1e-5, err_msg=f"{kind} {method} sample {i}")
            assert exp.special["text"][0] and exp.special["text"][-1]  # [CLS] ... [SEP]


def test_mean_pooling_classifier_matches_reference(tmp_path):
    encoder, tok = tiny_models.text_model("bert")
    clf = models.heads.MeanPoolingClassifier(encoder.bert, num_labels=3, labels=["x", "y", "z"])
    m = models.wrap(clf, tokenizer=tok, device="cpu")
    samples = tiny_models.texts(4)
    batch = m.preprocess(samples)
    exps = models.explain(m, batch, method="chefer2021")
    for i, exp in enumerate(exps):
        single = dict(m.preprocess([samples[i]]))

        def score(outputs, single=single, target=exp.target):  # the reference sees the encoder only
            pooled = clf.pool(outputs.last_hidden_state, single["attention_mask"])
            return clf.head(pooled)[0, target]

        ref = reference_classifier_row(clf.encoder, single, readout="mean", score_fn=score).float().numpy()
        np.testing.assert_allclose(exp.relevance["text"], ref, atol=1e-5)


def test_row_vector_path_equals_full_product():
    m = models.wrap(tiny_models.vit(), device="cpu")
    batch = m.preprocess(tiny_models.images(6))
    fast = models.explain(m, batch, method="chefer2021")
    chefer = models.methods.get_method("chefer2021")
    from attn_audit.models.capture import CapturePlan
    from attn_audit.models.methods import finalize_rows
    from attn_audit.models.run_capture import run_capture

    result = run_capture(m.adapter, batch, CapturePlan(True, frozenset({"gradient_weighted"})))
    chefer.fast_path = False
    full = finalize_rows(chefer.attribute(result.capture), result.capture)["image"][:, 1:].numpy()
    np.testing.assert_allclose(np.stack([e.relevance["image"].ravel() for e in fast]), full, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_per_sample_and_padding_never_matters(method, tmp_path):
    model, tok = tiny_models.text_model("bert")
    m = models.wrap(model, tokenizer=tok, device="cpu")
    samples = tiny_models.texts(6)
    together = models.explain(m, m.preprocess(samples), method=method)
    for sample, exp in zip(samples, together):
        alone = models.explain(m, m.preprocess([sample]), method=method)[0]
        assert alone.target == exp.target
        np.testing.assert_allclose(exp.relevance["text"], alone.relevance["text"], atol=1e-5)
    # a much longer neighbour adds padding to every other sample: nothing changes
    long = {"id": "long", "text": " ".join(tiny_models.WORDS * 2)}
    padded = models.explain(m, m.preprocess([samples[0], long]), method=method)[0]
    np.testing.assert_allclose(padded.relevance["text"], together[0].relevance["text"], atol=1e-5)


def test_explicit_targets_change_the_gradient_methods_only_where_they_should():
    m = models.wrap(tiny_models.vit(), device="cpu")
    batch = m.preprocess(tiny_models.images(3))
    per_class = [models.explain(m, batch, method="chefer2021", target=c) for c in range(3)]
    assert [e.target for e in per_class[2]] == [2, 2, 2]
    assert not np.allclose(per_class[0][0].relevance["image"], per_class[1][0].relevance["image"])
    raw = [models.explain(m, batch, method="raw_attention", target=c)[0].relevance["image"] for c in range(2)]
    np.testing.assert_array_equal(raw[0], raw[1])  # no gradients: the target cannot matter
    mixed = models.explain(m, batch, method="chefer2021", target=[1, None, 0])
    assert mixed[0].target == 1 and mixed[2].target == 0 and mixed[1].target == mixed[1].prediction
    torch.testing.assert_close(torch.tensor(mixed[0].relevance["image"]),
                               torch.tensor(per_class[1][0].relevance["image"]))
