"""AttnLRP and CP-LRP on decoder-only LMs through models.explain: every generated token of a left-padded batch equals
the explicit per-sample, per-token float64 relevance pass of tests/reference/lrp_gradient.py on the unpadded
sequence; batched = one prompt at a time; a norm the rules do not model (Gemma's 1 + w) is refused by name."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from attn_audit.models.lrp.modified_gradient import RULES

from attn_audit import models
from tests import tiny_lm
from tests.reference import lrp_gradient as ref

TOL = 1e-5  # of the largest |relevance|: maps are returned in float32, and the stock RMSNorm normalises in float32


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("kind", ["llama", "qwen2", "mistral"])
def test_every_generated_token_matches_the_per_token_reference(kind, rule):
    m = tiny_lm.wrapped(kind)
    double = copy.deepcopy(m.model).double()
    batch = m.preprocess(tiny_lm.prompts(3))
    assert batch["attention_mask"][:, 0].tolist().count(0) == 2, "left-padded"
    exps = models.explain(m, batch, models.method(rule, dtype="float64"))
    assert len(exps) > 3 and all(e.ok for e in exps)
    for e in exps:
        i = batch.sample_ids.index(e.sample_id)
        detail = json.loads(e.target_detail)
        p = detail["position"]
        ids = batch.meta["prompts"][i] + m.adapter.sequences(batch)["continuations"][i]
        want = ref.llama_reference(double, torch.tensor([ids[:p]]), p - 1, detail["token_id"], rule)
        got = e.relevance["text"]
        assert got.shape == (p,) and e.score == pytest.approx(want.score, abs=1e-5)
        want = want.relevance["text"].numpy()
        np.testing.assert_allclose(got, want, atol=TOL * np.abs(want).max(),
                                   err_msg=f"{kind} {rule} {e.sample_id} token {e.target}")


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_batched_and_left_padded_equals_one_prompt_at_a_time(kind):
    tiny_lm.assert_batched_equals_alone(tiny_lm.wrapped(kind), tiny_lm.prompts(4), list(RULES), ("text",), 1e-5)


def test_a_norm_the_rules_do_not_model_is_refused_by_name():
    m = tiny_lm.wrapped("gemma")
    with pytest.raises(models.AttnAuditError, match="GemmaRMSNorm is not a LayerNorm / RMSNorm of the form"):
        models.explain(m, m.preprocess(tiny_lm.prompts(2)), "attnlrp")
