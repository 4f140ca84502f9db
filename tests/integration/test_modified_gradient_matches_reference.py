"""AttnLRP / CP-LRP as input × modified gradient (models/lrp/modified_gradient.py), batched and padded, equal to
the explicit per-sample float64 relevance pass of tests/reference/lrp_gradient.py on tiny stock ViT, DeiT,
BERT, RoBERTa, DistilBERT, a mean-pool classifier, CLIP and Llama; padding changes nothing; the model is left
as it was.

In float64 the two agree to ~1e-15 of the largest relevance. In float32 (the production default) the same
maps differ from the float64 reference by ~1e-6 of it on these models (checked below at 1e-4).
"""

from __future__ import annotations

import pytest
import torch
import transformers as T
from attn_audit.models.heads import MeanPoolingClassifier
from attn_audit.models.lrp.modified_gradient import RULES, clip_pair_forward, first_blocks, token_relevance
from transformers import AttentionInterface

from tests import tiny_bimodal, tiny_models
from tests.reference import lrp_gradient as ref

F64_TOL = 1e-10  # of the largest |relevance|
F32_TOL = 1e-4
LLAMA_TOL = 1e-6


def close(a: torch.Tensor, b: torch.Tensor, tol: float) -> bool:
    return float((a.double() - b.double()).abs().max()) <= tol * float(b.abs().max())


def text_batch(tok, n=3):
    enc = tok([s["text"] for s in tiny_models.texts(n)], padding=True, return_tensors="pt")
    assert not bool(enc["attention_mask"].all()), "the batch must be padded"
    return enc["input_ids"], enc["attention_mask"]


def tiny_llama():
    cfg = T.LlamaConfig(vocab_size=30, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        initializer_range=0.1, pad_token_id=0)
    torch.manual_seed(0)
    return T.LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("kind", ["vit", "deit"])
def test_image_classifiers_match_the_reference(kind, rule):
    model = (tiny_models.vit() if kind == "vit" else tiny_models.deit()).double()
    pixels = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    targets = torch.tensor([0, 1, 2])
    got = token_relevance(model, rule, lambda: model(pixel_values=pixels).logits.gather(1, targets[:, None])[:, 0])
    (entry,) = got.relevance.values()
    for i in range(3):
        want = ref.vit_reference(model, pixels[i:i + 1], int(targets[i]), rule)
        assert abs(want.score - float(got.scores[i])) < 1e-12
        assert close(entry[i], want.relevance["image"], F64_TOL)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("kind", ["bert", "roberta", "distilbert"])
def test_padded_text_classifiers_match_the_per_sample_reference(kind, rule):
    model, tok = tiny_models.text_model(kind)
    model = model.double()
    ids, mask = text_batch(tok)
    got = token_relevance(model, rule, lambda: model(input_ids=ids, attention_mask=mask).logits[:, 1])
    (entry,) = got.relevance.values()
    for i in range(len(ids)):
        n = int(mask[i].sum())
        want = ref.text_classifier_reference(model, ids[i:i + 1, :n], 1, rule)
        assert abs(want.score - float(got.scores[i])) < 1e-12
        assert close(entry[i, :n], want.relevance["text"], F64_TOL)
        assert bool((entry[i, n:] == 0).all()), "padding gets no relevance"


@pytest.mark.parametrize("rule", RULES)
def test_mean_pool_classifier_matches_the_reference(rule):
    bert, tok = tiny_models.text_model("bert")
    model = MeanPoolingClassifier(bert.bert, num_labels=3).double().eval()
    ids, mask = text_batch(tok)
    got = token_relevance(model, rule, lambda: model(input_ids=ids, attention_mask=mask).logits[:, 2])
    assert model.normalize, "the head's normalisation is restored"
    (entry,) = got.relevance.values()
    for i in range(len(ids)):
        n = int(mask[i].sum())
        want = ref.mean_pool_reference(model, ids[i:i + 1, :n], 2, rule)
        assert abs(want.score - float(got.scores[i])) < 1e-12
        assert close(entry[i, :n], want.relevance["text"], F64_TOL)


@pytest.mark.parametrize("rule", RULES)
def test_clip_towers_match_the_reference(rule):
    model = tiny_bimodal.clip().double()
    tok = tiny_models.bert_tokenizer()
    enc = tok([p["text"] for p in tiny_bimodal.pairs(3)], padding=True, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    pixels = torch.randn(3, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    seen = {}

    def forward():
        out, scores = clip_pair_forward(model, input_ids=ids, attention_mask=mask, pixel_values=pixels)
        seen["logits"] = out.logits_per_image.detach()
        return scores

    got = token_relevance(model, rule, forward)
    assert torch.allclose(got.scores, seen["logits"].diagonal(), rtol=1e-12, atol=0)
    image, text = got.relevance["vision_model.encoder.layers.0"], got.relevance["text_model.encoder.layers.0"]
    for i in range(3):
        n = int(mask[i].sum())
        want = ref.clip_reference(model, ids[i:i + 1, :n], pixels[i:i + 1], rule)
        assert abs(want.score - float(got.scores[i])) < 1e-12
        assert close(image[i], want.relevance["image"], F64_TOL)
        assert close(text[i, :n], want.relevance["text"], F64_TOL)
        assert bool((text[i, n:] == 0).all())


@pytest.mark.parametrize("rule", RULES)
def test_llama_matches_the_reference_at_each_sample_last_token(rule):
    model = tiny_llama().double()
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([7, 4, 6])
    ids = torch.randint(1, 30, (3, 7), generator=g)
    mask = (torch.arange(7)[None] < lengths[:, None]).long()
    ids = ids * mask  # right padding with pad id 0
    last = lengths - 1
    with torch.no_grad():
        targets = model(input_ids=ids, attention_mask=mask).logits[torch.arange(3), last].argmax(-1)

    def forward():
        logits = model(input_ids=ids, attention_mask=mask).logits
        return logits[torch.arange(3), last, targets]

    got = token_relevance(model, rule, forward)
    (entry,) = got.relevance.values()
    for i in range(3):
        n = int(lengths[i])
        want = ref.llama_reference(model, ids[i:i + 1, :n], n - 1, int(targets[i]), rule)
        # LlamaRMSNorm normalises in float32 even in a float64 model (and its rotary tables are float32)
        assert abs(want.score - float(got.scores[i])) < 1e-7
        assert close(entry[i, :n], want.relevance["text"], LLAMA_TOL)
        assert bool((entry[i, n:] == 0).all())


@pytest.mark.parametrize("rule", RULES)
def test_float32_stays_near_the_float64_reference(rule):
    model, tok = tiny_models.text_model("bert")
    ids, mask = text_batch(tok, 3)
    got = token_relevance(model, rule, lambda: model(input_ids=ids, attention_mask=mask).logits[:, 0])
    (entry,) = got.relevance.values()
    assert entry.dtype == torch.float32
    reference_model = model.double()  # after the float32 pass: .double() converts in place
    for i in range(3):
        n = int(mask[i].sum())
        want = ref.text_classifier_reference(reference_model, ids[i:i + 1, :n], 0, rule)
        assert close(entry[i, :n], want.relevance["text"], F32_TOL)


def test_batched_equals_per_sample_and_padding_changes_nothing():
    model, tok = tiny_models.text_model("bert")
    model = model.double()
    ids, mask = text_batch(tok)
    batched = token_relevance(model, "attnlrp", lambda: model(input_ids=ids, attention_mask=mask).logits[:, 1])
    (entry,) = batched.relevance.values()
    for i in range(len(ids)):
        n = int(mask[i].sum())
        alone = token_relevance(model, "attnlrp",
                                lambda i=i, n=n: model(input_ids=ids[i:i + 1, :n],
                                                       attention_mask=mask[i:i + 1, :n]).logits[:, 1])
        assert torch.allclose(entry[i, :n], next(iter(alone.relevance.values()))[0], rtol=0, atol=1e-13)
        assert torch.allclose(batched.conservation[i], alone.conservation[0], rtol=1e-9, atol=1e-13)


def test_many_targets_per_sample_are_one_column_each():
    model = tiny_models.vit().double()
    pixels = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    both = token_relevance(model, "attnlrp", lambda: model(pixel_values=pixels).logits[:, :2])
    (entry,) = both.relevance.values()
    assert entry.shape == (2, 2, 17) and both.scores.shape == both.conservation.shape == (2, 2)
    for t in range(2):
        one = token_relevance(model, "attnlrp", lambda t=t: model(pixel_values=pixels).logits[:, t])
        assert torch.allclose(entry[:, t], next(iter(one.relevance.values())), rtol=0, atol=1e-15)


def test_everything_is_restored_even_when_the_forward_raises():
    model, tok = tiny_models.text_model("bert")
    ids, mask = text_batch(tok, 2)
    with torch.no_grad():
        before = model(input_ids=ids, attention_mask=mask).logits
    impl = model.config._attn_implementation
    registered = set(AttentionInterface._global_mapping)

    def failing():
        model(input_ids=ids, attention_mask=mask)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        token_relevance(model, "attnlrp", failing)
    assert model.config._attn_implementation == impl
    assert set(AttentionInterface._global_mapping) == registered
    hooks = [m for m in model.modules() if m._forward_hooks or m._forward_pre_hooks]
    assert hooks == []
    out = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(out.detach(), before)
    out[:, 0].sum().backward()  # a plain backward again: the rules are gone
    assert first_blocks(model) == {"bert.encoder.layer.0": model.bert.encoder.layer[0]}
