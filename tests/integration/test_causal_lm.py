"""Decoder-only language models (tiny random GPT-2, Llama, Qwen2, Mistral, Gemma): every generated token against the
per-token float64 reference (tests/reference/causal_lm.py), eager and fused; batched + left-padded = per sample;
forced decoding of the greedy continuation = generation; perturbation curves against the stock model on the reduced
prompt; bad input."""

import json

import numpy as np
import pytest
import torch
from attn_audit.models.perturbation import perturbation_curves

from attn_audit import models
from tests import tiny_lm
from tests.reference.causal_lm import reference_token

TOL = 1e-5


def _wrapped(kind, capture="fused", chat=True, **resources):
    model, tok = tiny_lm.causal_lm(kind, chat)
    return models.wrap(model, tokenizer=tok, device="cpu", capture=capture, **resources)


def _alone(m, prompt_ids):
    """The greedy continuation of one unpadded prompt (the stock model, no adapter)."""
    with torch.no_grad():
        out = m.model.generate(input_ids=torch.tensor([prompt_ids]), do_sample=False, num_beams=1)
    row = out[0, len(prompt_ids):].tolist()
    return row[:row.index(tiny_lm.EOS)] if tiny_lm.EOS in row else row


@pytest.mark.parametrize("capture", ["eager", "fused"])
@pytest.mark.parametrize("kind", tiny_lm.KINDS)
def test_every_generated_token_matches_the_per_token_reference(kind, capture):
    m = _wrapped(kind, capture)
    samples = tiny_lm.prompts(3)
    batch = m.preprocess(samples)
    assert batch["attention_mask"][:, 0].tolist().count(0) == 2, "left-padded"
    exps = models.explain(m, batch, method="chefer2021")
    assert len(exps) > 3 and all(e.ok for e in exps)
    for exp in exps:
        prompt = batch.meta["prompts"][batch.sample_ids.index(exp.sample_id)]
        ids = prompt + _alone(m, prompt)
        detail = json.loads(exp.target_detail)
        p = detail["position"]
        assert p == len(prompt) + exp.target and detail["token_id"] == ids[p] == exp.prediction
        assert detail["token"] == exp.target_label == m.adapter.tokenizer.convert_ids_to_tokens(ids[p])
        row, logit, logprob = reference_token(m.model, ids, p)
        assert exp.score == pytest.approx(logit, abs=1e-4) and detail["logprob"] == pytest.approx(logprob, abs=1e-5)
        assert exp.tokens["text"] == m.adapter.tokenizer.convert_ids_to_tokens(ids[:p])
        assert exp.special["text"].tolist() == [t == tiny_lm.BOS for t in ids[:p]]
        np.testing.assert_allclose(exp.relevance["text"][:p - 1], row[:p - 1].numpy(), atol=TOL,
                                   err_msg=f"{kind} {capture} {exp.sample_id} token {exp.target}")


def test_the_readout_entry_is_r_minus_identity():
    m = _wrapped("llama")
    batch = m.preprocess(tiny_lm.prompts(2))
    for exp in models.explain(m, batch, method="chefer2021"):
        prompt = batch.meta["prompts"][batch.sample_ids.index(exp.sample_id)]
        ids, p = prompt + _alone(m, prompt), json.loads(exp.target_detail)["position"]
        assert exp.relevance["text"][p - 1] == pytest.approx(float(reference_token(m.model, ids, p)[0][p - 1]),
                                                             abs=TOL)


@pytest.mark.parametrize("capture", ["eager", "fused"])
def test_batched_and_left_padded_equals_one_prompt_at_a_time(capture):
    m = _wrapped("qwen2", capture)
    tiny_lm.assert_batched_equals_alone(m, tiny_lm.prompts(4), models.default_methods(), ("text",), TOL)


def test_forced_decoding_of_the_greedy_continuation_equals_generation():
    m = _wrapped("gpt2")
    samples = tiny_lm.prompts(3)
    generated = models.explain(m, m.preprocess(samples), method=["chefer2021", "rollout"])
    said = {e.sample_id: json.loads(e.target_detail)["continuation"] for e in generated}
    forced = [{**s, "target": said[s["id"]]} for s in samples]
    again = models.explain(m, m.preprocess([forced[0], samples[1], forced[2]]), method=["chefer2021", "rollout"])
    assert len(again) == len(generated)
    for g, f in zip(generated, again):
        dg, df = json.loads(g.target_detail), json.loads(f.target_detail)
        assert df.pop("forced") == (f.sample_id != "p1") and not dg.pop("forced")
        dg.pop("note", None), df.pop("note", None)  # generation hit the length limit; a forced continuation has none
        assert dg.pop("logprob") == pytest.approx(df.pop("logprob"), abs=TOL)
        assert (g.sample_id, g.target, g.prediction) == (f.sample_id, f.target, f.prediction) and dg == df
        np.testing.assert_allclose(f.relevance["text"], g.relevance["text"], atol=TOL)


def test_forced_decoding_explains_a_continuation_the_model_would_not_say():
    m = _wrapped("llama")
    exps = models.explain(m, m.preprocess([{"id": "q", "text": "the cat", "target": "sat on the mat"}]))
    chefer = [e for e in exps if e.method == "chefer2021"]
    assert [e.target_label for e in chefer] == ["sat", "on", "the", "mat"] and all(e.note is None for e in chefer)
    assert [json.loads(e.target_detail)["position"] for e in chefer] == [3, 4, 5, 6]  # after <s> the cat
    assert all(json.loads(e.target_detail)["logprob"] < 0 for e in chefer)


def test_chat_template_tokens_are_flagged_and_never_removed():
    m = _wrapped("llama")
    batch = m.preprocess([{"id": "c", "text": "the cat sat", "chat": True}])
    exp = models.explain(m, batch)[0]
    prompt = ["<|user|>", "the", "cat", "sat", "<|assistant|>"]
    assert exp.tokens["text"][:5] == prompt and exp.special["text"][:5].tolist() == [True, False, False, False, True]
    assert m.adapter.removable_tokens(batch)[0, :5].tolist() == [False, True, True, True, False]
    with pytest.raises(models.SampleError, match="tokenizer has none; leave 'chat' out"):
        _wrapped("llama", chat=False).preprocess([{"text": "the cat", "chat": True}])


def test_every_perturbation_entry_equals_the_stock_model_on_the_reduced_prompt():
    m = _wrapped("llama")
    samples, steps = tiny_lm.prompts(3), [0.0, 0.25, 0.5, 0.75, 1.0]
    batch = m.preprocess(samples)
    exps = models.explain(m, batch, method="chefer2021")
    rng = np.random.default_rng(1)  # random maps: every removal order is exercised, not only the method's
    maps = [rng.standard_normal(e.relevance["text"].size) for e in exps]
    curves = perturbation_curves(m, batch, "text", maps, [e.prediction for e in exps], steps, max_rows=7,
                                 samples=[batch.sample_ids.index(e.sample_id) for e in exps],
                                 positions=[e.target for e in exps])
    for e, exp in enumerate(exps):
        prompt = batch.meta["prompts"][batch.sample_ids.index(exp.sample_id)]
        ids = prompt + _alone(m, prompt)
        words = list(range(1, len(prompt)))  # <s> stays
        assert curves.probability[e, 0, 0] == pytest.approx(exp.probability, abs=1e-5)
        for d, direction in enumerate(curves.directions):
            order = sorted(words, key=lambda j: (-maps[e][j] if direction == "positive" else maps[e][j], j))
            for s, fraction in enumerate(steps):
                removed = set(order[:int(np.floor(fraction * len(order) + 1e-9))])
                p = json.loads(exp.target_detail)["position"]
                kept = [t for j, t in enumerate(ids[:p]) if j not in removed]
                with torch.no_grad():
                    logits = m.model(input_ids=torch.tensor([kept])).logits[0, -1]
                assert curves.score[e, d, s] == pytest.approx(logits[exp.prediction].item(), abs=1e-4)
                assert curves.prediction[e, d, s] == int(logits.argmax())


@pytest.mark.parametrize("sample, message", [
    ({"text": ""}, "prompt is empty"),
    ({"text": " \u200b "}, "prompt is empty"),
    ({"text": "<s>"}, "special tokens only"),
    ({"text": "the cat", "target": "  "}, "target continuation is empty"),
    ({"text": "cat " * tiny_lm.CONTEXT}, "leaves room for 19; pass truncate=True"),
    ({"text": "the", "target": "cat " * tiny_lm.CONTEXT}, "continuation has 24 tokens"),
    ({"prompt": "the cat"}, "needs a 'text'"),
])
def test_bad_prompts_are_named_and_their_neighbours_explained(sample, message):
    m = _wrapped("gpt2")
    batch = m.preprocess([{"id": "bad", **sample}, *tiny_lm.prompts(1)], errors="collect")
    exps = models.explain(m, batch, method="chefer2021")
    assert exps[0].sample_id == "bad" and message in exps[0].error
    assert len(exps) > 1 and all(e.ok and e.sample_id == "p0" for e in exps[1:])


def test_truncation_keeps_the_last_tokens_and_says_so():
    m = _wrapped("gpt2", truncate=True)
    words = tiny_lm.WORDS[:20] * 2
    exps = models.explain(m, m.preprocess([{"id": "long", "text": " ".join(words)}]), method="chefer2021")
    room = tiny_lm.CONTEXT - tiny_lm.MAX_NEW_TOKENS
    assert all("prompt truncated to its last 19 tokens (it has 40)" in e.note for e in exps)
    assert exps[0].tokens["text"] == words[-room:]


def test_load_reads_a_causal_lm_folder(tmp_path):
    model, tok = tiny_lm.causal_lm("llama")  # (transformers reads a qwen2 folder's word-level tokenizer as byte-level)
    model.save_pretrained(tmp_path, safe_serialization=True)
    tok.save_pretrained(tmp_path)
    m = models.load(str(tmp_path), device="cpu")
    assert m.adapter.family == "causal-lm"
    loaded = models.explain(m, m.preprocess(tiny_lm.prompts(2)), method="chefer2021")
    wrapped = models.explain(_wrapped("llama"), m.preprocess(tiny_lm.prompts(2)), method="chefer2021")
    assert [e.target_detail for e in loaded] == [e.target_detail for e in wrapped]
    for a, b in zip(loaded, wrapped):
        np.testing.assert_allclose(a.relevance["text"], b.relevance["text"], atol=TOL)


def test_a_right_padded_tokenizer_output_is_explained_as_its_prompts():
    m = _wrapped("llama")
    samples = tiny_lm.prompts(3)
    tok = m.adapter.tokenizer
    tok.padding_side = "right"
    own = models.explain(m, tok([s["text"] for s in samples], padding=True, return_tensors="pt"), method="chefer2021")
    ours = models.explain(m, m.preprocess(samples), method="chefer2021")
    assert [e.target_detail for e in own] == [e.target_detail for e in ours]
    for a, b in zip(own, ours):
        np.testing.assert_allclose(a.relevance["text"], b.relevance["text"], atol=TOL)
