"""`models.explain` takes a tokenizer's / processor's output or a plain dict of tensors as well as a Batch:
sample ids are positions, and the maps equal those of the same samples through `preprocess`."""

import numpy as np
import pytest

from attn_audit import models
from tests import tiny_bimodal, tiny_models


def test_a_tokenizers_batch_encoding_explains_like_preprocess():
    m = tiny_models.wrapped("bert")
    texts = [s["text"] for s in tiny_models.texts(3)]
    encoding = m.adapter.encoder.tokenizer(texts, padding=True, return_tensors="pt")
    direct = models.explain(m, encoding, ["chefer2021", "rollout"])
    via = models.explain(m, m.preprocess([{"id": str(i), "text": t} for i, t in enumerate(texts)]),
                         ["chefer2021", "rollout"])
    assert [e.sample_id for e in direct] == ["0", "0", "1", "1", "2", "2"]
    for a, b in zip(direct, via):
        assert a.tokens == b.tokens and (a.special["text"] == b.special["text"]).all()
        np.testing.assert_array_equal(a.relevance["text"], b.relevance["text"])


def test_a_plain_dict_of_pixels():
    m = tiny_models.wrapped("vit")
    batch = m.preprocess(tiny_models.images(2))
    exps = models.explain(m, {"pixel_values": batch["pixel_values"]}, "rollout")
    np.testing.assert_array_equal(exps[1].relevance["image"], models.explain(m, batch, "rollout")[1].relevance["image"])


def test_inputs_that_cannot_be_explained_say_what_to_give():
    m = tiny_models.wrapped("bert")
    encoding = m.adapter.encoder.tokenizer(["a b c", "a"], padding=True, return_tensors="pt")
    with pytest.raises(models.AttnAuditError, match="right-padded"):
        left = {k: v.flip(1) for k, v in encoding.items()}
        models.explain(m, left, "rollout")
    with pytest.raises(models.AttnAuditError, match="mapping of tensors"):
        models.explain(m, ["a fine film"], "rollout")
    vqa = tiny_bimodal.wrapped("lxmert")
    with pytest.raises(models.AttnAuditError, match="region grid"):
        models.explain(vqa, dict(vqa.preprocess(tiny_bimodal.samples(1))), "rollout")
