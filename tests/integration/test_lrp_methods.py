"""The LRP family through `models.explain` (models/methods/transformer_attribution.py, partial_lrp.py, lrp.py,
attnlrp.py, cp_lrp.py) against the independent per-sample float64 references (tests/reference/lrp.py,
lrp_gradient.py): every method's map equals the reference's for each sample of a padded batch; the other methods'
maps are unchanged by an LRP method in the same call; families without a method are refused naming theirs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attn_audit import models
from tests import tiny_bimodal, tiny_models
from tests.reference import lrp as chefer_reference
from tests.reference import lrp_gradient as gradient_reference
from tests.tiny_models import bert_tokenizer

LRP = ["transformer_attribution", "partial_lrp", "lrp", "attnlrp", "cp_lrp"]


def reference_rows(model, inputs: dict, target: int, method: str, n_special: int) -> dict[str, np.ndarray]:
    """The readout row of `method` for one unpadded sample, from the float64 references."""
    if method in ("attnlrp", "cp_lrp"):
        if "pixel_values" in inputs:
            ref = gradient_reference.vit_reference(model.double(), inputs["pixel_values"].double(), target, method)
        else:
            ref = gradient_reference.text_classifier_reference(model.double(), inputs["input_ids"], target, method)
        model.float()
        return {k: v.numpy() for k, v in ref.relevance.items()}
    rules = "ours" if method == "transformer_attribution" else "lrp"
    logits = model(**inputs).logits
    start = torch.nn.functional.one_hot(torch.tensor(target), logits.shape[-1]).double()
    (stream, ref), = chefer_reference.reference_lrp(model, inputs, start, rules).items()
    if method == "lrp":
        if ref["pixels"] is None:
            return {stream: ref["tokens"].sum(-1).detach().numpy()}
        n = ref["embeddings"].shape[0] - n_special
        grid = int(round(n ** 0.5))
        patch = ref["pixels"].shape[0] // grid
        per_patch = ref["pixels"].reshape(grid, patch, grid, patch).sum((1, 3)).flatten()
        return {stream: np.concatenate([np.zeros(n_special), per_patch.detach().numpy()])}
    if method == "partial_lrp":
        return {stream: ref["attn_cam"][-1].clamp_min(0).mean(0)[0].detach().numpy()}
    grads = attention_gradients(model, inputs, target)
    v = torch.nn.functional.one_hot(torch.tensor(0), ref["embeddings"].shape[0]).double()
    for grad, cam in reversed(list(zip(grads, ref["attn_cam"]))):
        v = v + v @ (grad * cam).clamp_min(0).mean(0)
    return {stream: v.detach().numpy()}


def attention_gradients(model, inputs, target) -> list[torch.Tensor]:
    model = model.double()
    model.set_attn_implementation("eager")
    values = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    out = model(**values, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    out.logits[0, target].backward()
    grads = [a.grad[0].detach() for a in out.attentions]
    model.float()
    model.zero_grad()
    return grads


@pytest.mark.parametrize("method", LRP)
@pytest.mark.parametrize("kind", ["vit", "bert"])
def test_each_lrp_method_equals_the_reference_per_sample(kind, method):
    m = tiny_models.wrapped(kind)
    if kind == "vit":  # random pixels and embeddings, as tests/integration/test_lrp_matches_reference.py
        with torch.no_grad():
            for p in m.model.base_model.embeddings.parameters(recurse=False):
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
        batch = m.adapter.batch_from_tensors({"pixel_values": torch.randn(2, 3, 32, 32,
                                                                          generator=torch.Generator().manual_seed(0))})
    else:
        samples = tiny_models.texts(3)  # of different lengths: a padded batch
        batch = m.preprocess(samples)
    got = models.explain(m, batch, models.method(method, dtype="float64"), target=1)
    n_special = 1
    for i, e in enumerate(got):
        if kind == "vit":
            inputs = {"pixel_values": batch["pixel_values"][i:i + 1]}
        else:
            inputs = {"input_ids": m.preprocess([samples[i]])["input_ids"]}
        want = reference_rows(m.model, inputs, 1, method, n_special)
        (modality, row), = want.items()
        if modality == "image":
            row = row[n_special:].reshape(e.relevance["image"].shape)
        else:
            row = row.copy()
            row[0] = 0.0  # the readout token's own entry is reported as 0 (SPEC §1.8)
        scale = max(float(np.abs(row).max()), 1e-12)
        np.testing.assert_allclose(e.relevance[modality] / scale, row / scale, atol=1e-5,
                                   err_msg=f"{method} {kind} sample {i}")


def test_the_other_methods_are_unchanged_by_an_lrp_method_in_the_same_call():
    m = tiny_models.wrapped("bert")
    batch = m.preprocess(tiny_models.texts(3))
    alone = models.explain(m, batch, ["chefer2021", "rollout"])
    mixed = models.explain(m, batch, ["chefer2021", "transformer_attribution", "rollout", "attnlrp"])
    mixed = [e for e in mixed if e.method in ("chefer2021", "rollout")]
    for x, y in zip(alone, mixed):
        assert (x.sample_id, x.method) == (y.sample_id, y.method)
        np.testing.assert_array_equal(x.relevance["text"], y.relevance["text"])


def test_clip_has_every_lrp_method():
    m = models.wrap(tiny_bimodal.clip(), device="cpu", tokenizer=bert_tokenizer())
    got = models.explain(m, m.preprocess(tiny_bimodal.pairs(2)), LRP)
    assert [e.method for e in got[:len(LRP)]] == LRP
    for e in got:
        assert e.error is None and set(e.relevance) == {"image", "text"}
        assert all(np.isfinite(v).all() and np.abs(v).max() > 0 for v in e.relevance.values())


def test_a_family_without_the_method_is_refused_naming_what_it_has():
    from tests import tiny_encdec

    m = tiny_encdec.wrapped_detr()
    with pytest.raises(models.AttnAuditError, match=r"transformer_attribution does not run on detr models.*"
                                                    r"detr models have: .*chefer2021"):
        models.explain(m, m.preprocess(tiny_encdec.images(1, 32)), "transformer_attribution")


def test_dtype_is_validated_and_part_of_the_spec():
    assert models.method("attnlrp", dtype="float64").spec == "attnlrp:dtype=float64"
    with pytest.raises(models.AttnAuditError, match="dtype must be one of float32, float64"):
        models.method("lrp", dtype="float16")


def test_a_non_conserving_map_gets_a_note_not_an_error():
    m = tiny_models.wrapped("vit")
    got = models.explain(m, m.preprocess(tiny_models.images(2)), models.method("attnlrp", tolerance=0.0))
    assert all(e.error is None and "attnlrp: relevance misses the target score" in e.note for e in got)
    quiet = models.explain(m, m.preprocess(tiny_models.images(2)), models.method("attnlrp", tolerance=10.0))
    assert all(e.note is None for e in quiet)
