"""LXMERT and VisualBERT adapters on tiny random-weight stock models: chefer2021 equals a per-sample float64
implementation of SPEC §1 written here (its own attention capture, no models.engine); batching and padding
change nothing; the hooked cross-attention direction is the one the model computes with; bad input is named."""

import numpy as np
import pytest
import torch

from attn_audit import models
from tests import tiny_bimodal
from tests.tiny_models import WORDS

torch.set_num_threads(1)
KINDS = ["lxmert", "visual_bert"]


@pytest.fixture(scope="module", params=KINDS)
def kind_and_model(request):
    return request.param, tiny_bimodal.wrapped(request.param)


# -- the per-sample reference: one unpadded sample, float64, explicit loops over layers -----------------------

def _abar(a: torch.Tensor) -> torch.Tensor:
    """Eq. 5 for one sample: mean over heads of (dA ⊙ A)^+ (no gradient: the score does not depend on A)."""
    grad = torch.zeros_like(a) if a.grad is None else a.grad
    return (grad[0].double() * a.detach()[0].double()).clamp(min=0).mean(0)


def _bar(r: torch.Tensor) -> torch.Tensor:
    """Eqs. 8–9: rownorm(R − I) + I, a zero row staying zero."""
    eye = torch.eye(r.shape[0], dtype=torch.float64)
    x = r - eye
    sums = x.sum(1, keepdim=True)
    return torch.where(sums != 0, x / torch.where(sums != 0, sums, 1.0), 0.0) + eye


def _probs_recorder(model):
    """Hooks on every LXMERT attention's dropout (the identity in eval: its output is the probabilities used)."""
    calls = {}

    def hook(module, _inputs, output):
        output.retain_grad()
        calls.setdefault(module, []).append(output)

    handles = [m.dropout.register_forward_hook(hook) for m in model.modules() if type(m).__name__ == "LxmertAttention"]
    return calls, handles


def reference_lxmert(model, inputs: dict, target: int) -> tuple[np.ndarray, np.ndarray]:
    calls, handles = _probs_recorder(model)
    try:
        out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                    token_type_ids=inputs["token_type_ids"], visual_feats=inputs["region_features"],
                    visual_pos=inputs["region_boxes"])
        out.question_answering_score[0, target].backward()
    finally:
        for h in handles:
            h.remove()
    enc = model.lxmert.encoder
    n_t, n_i = inputs["input_ids"].shape[1], inputs["region_features"].shape[1]
    r_tt, r_ii = torch.eye(n_t, dtype=torch.float64), torch.eye(n_i, dtype=torch.float64)
    r_ti, r_it = torch.zeros(n_t, n_i, dtype=torch.float64), torch.zeros(n_i, n_t, dtype=torch.float64)
    for layer in enc.layer:  # Eq. 6, language stream
        r_tt = r_tt + _abar(calls[layer.attention.self.dropout][0]) @ r_tt
    for layer in enc.r_layers:  # Eq. 6, vision stream
        r_ii = r_ii + _abar(calls[layer.attention.self.dropout][0]) @ r_ii
    for x in enc.x_layers:
        a_ti, a_it = (_abar(a) for a in calls[x.visual_attention.att.dropout])
        # Eqs. 10–11, both directions from the state before the block
        r_ti, r_tt, r_it, r_ii = (r_ti + _bar(r_tt).T @ a_ti @ _bar(r_ii), r_tt + a_ti @ r_it,
                                  r_it + _bar(r_ii).T @ a_it @ _bar(r_tt), r_ii + a_it @ r_ti)
        a_tt, a_ii = _abar(calls[x.lang_self_att.self.dropout][0]), _abar(calls[x.visn_self_att.self.dropout][0])
        r_tt, r_ti = r_tt + a_tt @ r_tt, r_ti + a_tt @ r_ti  # Eqs. 6–7
        r_ii, r_it = r_ii + a_ii @ r_ii, r_it + a_ii @ r_it
    text = r_tt[0].clone()
    text[0] = 0.0
    return text.numpy(), r_ti[0].numpy()


def reference_visual_bert(model, inputs: dict, target: int) -> tuple[np.ndarray, np.ndarray]:
    out = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                token_type_ids=inputs["token_type_ids"], visual_embeds=inputs["region_features"],
                visual_attention_mask=inputs["region_mask"], output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    out.logits[0, target].backward()
    n_t = inputs["input_ids"].shape[1]
    n = n_t + inputs["region_features"].shape[1]
    r = torch.eye(n, dtype=torch.float64)
    for a in out.attentions:
        r = r + _abar(a) @ r
    pooled = n_t - 2  # the token the VQA head reads
    row = r[pooled].clone()
    row[pooled] = 0.0
    return row[:n_t].numpy(), row[n_t:].numpy()


REFERENCE = {"lxmert": reference_lxmert, "visual_bert": reference_visual_bert}


def test_chefer2021_equals_the_per_sample_reference(kind_and_model):
    kind, m = kind_and_model
    samples = tiny_bimodal.samples(6)
    batch = m.preprocess(samples)
    assert not batch["attention_mask"].all() and not batch["region_mask"].all(), "both modalities padded"
    exps = models.explain(m, batch, method="chefer2021")
    for sample, exp in zip(samples, exps):
        single = m.preprocess([sample])
        text, image = REFERENCE[kind](m.model, dict(single), exp.target)
        np.testing.assert_allclose(exp.relevance["text"], text, atol=1e-5, rtol=1e-5,
                                   err_msg=f"{kind} {exp.sample_id} text")
        np.testing.assert_allclose(exp.relevance["image"].ravel(), image, atol=1e-5, rtol=1e-5,
                                   err_msg=f"{kind} {exp.sample_id} image")
        assert np.abs(image).max() > 1e-4, "the image map must not be trivially zero"
        grid = (2, 2) if "image" in sample else (len(sample["region_features"]),)
        assert exp.relevance["image"].shape == grid


@pytest.mark.parametrize("method", models.default_methods())
def test_batched_equals_per_sample_and_padding_never_matters(kind_and_model, method):
    kind, m = kind_and_model
    samples = tiny_bimodal.samples(5)
    together = models.explain(m, m.preprocess(samples), method=method)
    long = {"id": "long", "text": " ".join(WORDS), "region_features": np.ones((9, tiny_bimodal.FEATURES), np.float32),
            "region_boxes": np.tile(np.float32([0, 0, 1, 1]), (9, 1))}
    padded = models.explain(m, m.preprocess([*samples, long]), method=method)
    for i, sample in enumerate(samples):
        alone = models.explain(m, m.preprocess([sample]), method=method)[0]
        for other in (together[i], padded[i]):
            assert other.target == alone.target
            for modality in ("text", "image"):
                np.testing.assert_allclose(other.relevance[modality], alone.relevance[modality], atol=1e-5,
                                           err_msg=f"{kind} {method} {sample['id']} {modality}")


def test_hooked_image_to_text_attention_is_the_one_the_model_uses():
    """A small change δ of the hooked image→text map changes the answer logit by <∂y/∂A, δ> (first order):
    the map is in the model's computation, in that direction, at that layer."""
    m = tiny_bimodal.wrapped("lxmert")
    batch = m.preprocess(tiny_bimodal.samples(1))
    from attn_audit.models.capture import CapturePlan
    from attn_audit.models.run_capture import run_capture

    result = run_capture(m.adapter, batch, CapturePlan(False, frozenset({"gradient_weighted"})))
    # the first layer's: the last layer's image stream never reaches the [CLS] readout
    event = [e for e in result.capture.events if (e.query, e.key) == ("image", "text")][0]
    assert event.attn.shape[-2:] == (4, batch["input_ids"].shape[1])
    delta = torch.randn(event.attn.shape, generator=torch.Generator().manual_seed(1))
    predicted = float((event.grad * delta).sum())
    assert abs(predicted) > 1e-4
    att = m.model.lxmert.encoder.x_layers[0].visual_attention.att
    calls, eps = [], 1e-3

    def nudge(module, args, _kwargs, output):  # the second call of the shared module: image queries
        calls.append(1)
        if len(calls) != 2:
            return output
        context = args[1]
        value = module.value(context).view(*context.shape[:-1], -1, module.attention_head_size).transpose(1, 2)
        shift = (eps * delta @ value).transpose(1, 2).reshape(output[0].shape)
        return (output[0] + shift, *output[1:])

    handle = att.register_forward_hook(nudge, with_kwargs=True)
    try:
        with torch.no_grad():
            nudged = m.adapter.forward(dict(batch)).question_answering_score[0, result.targets.predictions[0]]
    finally:
        handle.remove()
    change = (float(nudged) - float(result.scores[0])) / eps
    assert change == pytest.approx(predicted, rel=0.05, abs=1e-4)


def test_hooks_are_released_even_when_the_forward_fails():
    m = tiny_bimodal.wrapped("lxmert")
    batch = m.preprocess(tiny_bimodal.samples(2))
    batch["region_boxes"] = batch["region_boxes"][..., :3]  # the model's box layer refuses this
    with pytest.raises(RuntimeError):
        m.adapter.run(batch)
    assert not any(mod._forward_hooks or mod._forward_pre_hooks for mod in m.model.modules())


@pytest.mark.parametrize("modality", ["text", "image"])
def test_perturbation_drops_exactly_the_removed_tokens(kind_and_model, modality):
    """Removing tokens in the perturbation pass gives the logits of the sample written without them."""
    kind, m = kind_and_model
    sample = tiny_bimodal.samples(2)[1]  # precomputed regions: removal is easy to write by hand
    batch = m.preprocess([sample, tiny_bimodal.samples(1)[0]])
    removable = m.adapter.removable_tokens(batch, modality)[:1]
    keep = removable.clone()
    drop = int(removable[0].nonzero()[1])
    keep[0, drop] = False
    got = m.adapter.perturbed_logits(batch, torch.tensor([0]), keep, modality)
    by_hand = dict(sample)
    if modality == "text":
        words = sample["text"].split()
        by_hand["text"] = " ".join(words[:drop - 1] + words[drop:])  # position 0 is [CLS]
    else:
        by_hand["region_features"] = np.delete(sample["region_features"], drop, 0)
        by_hand["region_boxes"] = np.delete(sample["region_boxes"], drop, 0)
    single = m.preprocess([by_hand])
    expected = getattr(m.adapter.forward(dict(single)), m.adapter.score_name)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert not m.adapter.removable_tokens(batch, "text")[0, 0], "[CLS] is never removed"


def test_perturbation_curves_run_per_modality(kind_and_model):
    kind, m = kind_and_model
    from attn_audit.models.perturbation import perturbation_curves

    samples = tiny_bimodal.samples(4)
    batch = m.preprocess(samples)
    exps = models.explain(m, batch, method="chefer2021")
    for modality, fractions in (("text", [0, 0.5, 1]), ("image", [0, 0.5, 1])):
        curves = perturbation_curves(m, batch, modality, [e.relevance[modality] for e in exps],
                                     [e.target for e in exps], fractions)
        np.testing.assert_allclose(curves.probability[:, :, 0], np.array([[e.probability] * 2 for e in exps]),
                                   atol=1e-5)


# -- bad input ------------------------------------------------------------------------------------------------

def test_question_without_image_features_is_named(kind_and_model):
    _, m = kind_and_model
    with pytest.raises(models.SampleError, match=r"'q'.*needs image features.*the sample has id, text"):
        m.preprocess([{"id": "q", "text": "the cat"}])


def test_mismatched_features_and_boxes_are_named(kind_and_model):
    _, m = kind_and_model
    bad = {"id": "b", "text": "a dog", "region_features": np.zeros((3, tiny_bimodal.FEATURES), np.float32),
           "region_boxes": np.zeros((2, 4), np.float32)}
    wrong_dim = {"id": "w", "text": "a dog", "region_features": np.zeros((3, 7), np.float32),
                 "region_boxes": np.zeros((3, 4), np.float32)}
    with pytest.raises(models.SampleError, match=r"'b'.*3 region features but region_boxes has shape \(2, 4\)"):
        m.preprocess([bad])
    batch = m.preprocess([bad, wrong_dim, *tiny_bimodal.samples(2)], errors="collect")
    assert batch.sample_ids == ["q0", "q1"]
    assert "the model takes 64" in {f.sample_id: f.message for f in batch.failures}["w"]
    assert {e.sample_id: e.ok for e in models.explain(m, batch)} == {"b": False, "w": False, "q0": True, "q1": True}


def test_over_long_question_is_refused_or_truncated(kind_and_model):
    kind, m = kind_and_model
    long = {**tiny_bimodal.samples(1)[0], "id": "long", "text": " ".join(["cat"] * 40)}
    with pytest.raises(models.SampleError, match=r"'long'.*42 tokens.*at most 32.*--truncate"):
        m.preprocess([long])
    truncating = tiny_bimodal.wrapped(kind, truncate=True)
    short = {**long, "id": "short", "text": "a cat"}
    exp, other = models.explain(truncating, truncating.preprocess([long, short]))
    assert exp.ok and len(exp.relevance["text"]) == 32 and exp.tokens["text"][-1] == "[SEP]"
    assert exp.note == "text truncated to the model's 32 tokens (it has 42): the maps cover the first part"
    assert other.note is None  # reported per sample


def test_precomputed_regions_read_from_a_jsonl_file_give_the_maps_of_the_in_memory_samples(tmp_path):
    """Users' own region features travel through `jsonl:` (and csv/parquet) as `region_features` /
    `region_boxes` columns; a malformed cell is an error naming its row."""
    import json

    from attn_audit.storage.datasets import SampleError, open_dataset

    given = [s for s in tiny_bimodal.samples(6) if "region_features" in s]
    rows = [{"id": s["id"], "text": s["text"], "region_features": s["region_features"].tolist(),
             "region_boxes": s["region_boxes"].tolist()} for s in given]
    rows.append({"id": "bad", "text": "a question", "region_features": [[1.0, 2.0], [3.0]], "region_boxes": []})
    path = tmp_path / "regions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = open_dataset(f"jsonl:{path}")
    m = tiny_bimodal.wrapped("lxmert")
    read = models.explain(m, m.preprocess([data[i] for i in range(len(given))]), method="chefer2021")
    direct = models.explain(m, m.preprocess(given), method="chefer2021")
    for a, b in zip(read, direct, strict=True):
        for modality in ("text", "image"):
            np.testing.assert_allclose(a.relevance[modality], b.relevance[modality], atol=1e-6)
    with pytest.raises(SampleError, match=r"bad.*region_features must be a non-empty \(n, d\) list"):
        data[len(given)]
