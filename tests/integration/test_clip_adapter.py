"""CLIPModel on a tiny random stock model: each pair's maps equal a per-sample float64 implementation of SPEC §1
(Eq. 6 per tower, [CLS] / EOT readouts, score logits_per_image[i, i]); batching and padding change nothing."""

import numpy as np
import pytest
import torch

from attn_audit import models
from tests import tiny_bimodal
from tests.tiny_models import bert_tokenizer

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def m():
    return models.wrap(tiny_bimodal.clip(), device="cpu", tokenizer=bert_tokenizer())


def _row(attentions, readout: int) -> np.ndarray:
    """Readout row of R = Π (I + Ā) for one sample, its own entry zeroed."""
    n = attentions[0].shape[-1]
    r = torch.eye(n, dtype=torch.float64)
    for a in attentions:
        r = r + (a.grad[0].double() * a.detach()[0].double()).clamp(min=0).mean(0) @ r
    row = r[readout].clone()
    row[readout] = 0.0
    return row.numpy()


def reference(model, single) -> tuple[np.ndarray, np.ndarray, float]:
    out = model(input_ids=single["input_ids"], attention_mask=single["attention_mask"],
                pixel_values=single["pixel_values"], output_attentions=True)
    attns = [*out.vision_model_output.attentions, *out.text_model_output.attentions]
    for a in attns:
        a.retain_grad()
    out.logits_per_image[0, 0].backward()
    eot = int((single["input_ids"][0] == 3).nonzero()[0])  # the first [SEP]
    image = _row(out.vision_model_output.attentions, 0)[1:].reshape(4, 4)
    return image, _row(out.text_model_output.attentions, eot), float(out.logits_per_image[0, 0].detach())


def test_pairs_match_the_per_sample_reference(m):
    samples = tiny_bimodal.pairs(5)
    batch = m.preprocess(samples)
    assert not batch["attention_mask"].all()
    for sample, exp in zip(samples, models.explain(m, batch, method="chefer2021")):
        image, text, score = reference(m.model, dict(m.preprocess([sample])))
        assert exp.target == 0 and exp.score == pytest.approx(score, abs=1e-5)
        np.testing.assert_allclose(exp.relevance["image"], image, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(exp.relevance["text"], text, atol=1e-5, rtol=1e-5)
        assert np.abs(text).max() > 1e-6 and np.abs(image).max() > 1e-6


@pytest.mark.parametrize("method", models.default_methods())
def test_batched_equals_per_sample(m, method):
    samples = tiny_bimodal.pairs(4)
    together = models.explain(m, m.preprocess(samples), method=method)
    for sample, exp in zip(samples, together):
        alone = models.explain(m, m.preprocess([sample]), method=method)[0]
        for modality in ("image", "text"):
            np.testing.assert_allclose(exp.relevance[modality], alone.relevance[modality], atol=1e-5)


def test_a_sample_without_its_pair_is_named(m):
    with pytest.raises(models.SampleError, match=r"'solo'.*\(image, text\) pairs.*id, image"):
        m.preprocess([{"id": "solo", "image": np.zeros((16, 16, 3), np.uint8)}])
