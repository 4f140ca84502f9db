"""Pins the per-sample reference (tests/reference) on tiny HAND-COMPUTED cases.

Every expected matrix below was worked out by hand (arithmetic in the comments); the numbers are
chosen to be exact in binary so the comparisons are tight (atol 1e-12).
"""

from __future__ import annotations

import pytest
import torch

from tests.reference import rules
from tests.reference.hf import METHODS, reference_classifier_row


def T(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(actual, expected) -> None:
    torch.testing.assert_close(actual, T(expected), atol=1e-12, rtol=0)


def self_ev(m, abar, block):
    return {"kind": "self", "query": m, "key": m, "block": block, "abar": T(abar)}


def cross_ev(s, q, abar, block):
    return {"kind": "cross", "query": s, "key": q, "block": block, "abar": T(abar)}


# Matrices reused below (text = "t", image = "i", 2 tokens each).
TXT_SELF = [[1.0, 1.0], [0.0, 2.0]]  # Ā of a text self-attention layer
IMG_SELF = [[0.0, 1.0], [1.0, 1.0]]  # Ā of an image self-attention layer
C_TI = [[1.0, 0.0], [0.5, 0.5]]  # Ā of text -> image cross-attention (text queries, image keys)
D_IT = [[0.0, 1.0], [1.0, 0.0]]  # Ā of image -> text cross-attention (image queries, text keys)


# ---------------------------------------------------------------------------------------------- Eq. 5


def test_eq5_clamp_before_mean_over_heads():
    A = T([[[0.5, 0.5]], [[0.25, 0.75]]])  # (H=2, nq=1, nk=2)
    dA = T([[[2.0, -1.0]], [[-1.0, 2.0]]])
    # dA*A: head0 [1.0, -0.5], head1 [-0.25, 1.5]; clamp -> [1, 0], [0, 1.5]; mean -> [0.5, 0.75]
    close(rules.grad_weighted(A, dA), [[0.5, 0.75]])
    # (mean first would give [0.375, 0.5]: the clamp order matters)
    assert not torch.allclose(rules.grad_weighted(A, dA), (dA * A).mean(0).clamp(min=0))


# ---------------------------------------------------------------------------------------------- Eq. 6


def test_eq6_two_layers_two_tokens():
    A1 = [[0.5, 0.5], [0.0, 1.0]]
    A2 = [[1.0, 0.0], [0.5, 0.5]]
    # layer 1: R = I + A1 = [[1.5, .5], [0, 2]]
    # layer 2: A2 R = [[1.5, .5], [.5*1.5 + .5*0, .5*.5 + .5*2]] = [[1.5, .5], [.75, 1.25]]
    #          R = [[1.5, .5], [0, 2]] + [[1.5, .5], [.75, 1.25]] = [[3, 1], [.75, 3.25]]
    R = rules.chefer_relevancy([self_ev("x", A1, 0), self_ev("x", A2, 1)], {"x": 2})
    close(R[("x", "x")], [[3.0, 1.0], [0.75, 3.25]])


# ---------------------------------------------------------------------------------------------- Eq. 7


def test_eq7_self_attention_propagates_cross_modality_rows():
    # cross t->i on the initial state: R̄tt = rownorm(0) + I = I, R̄ii = I  =>  Rti = C
    #   Eq. 11 adds C·Rit = C·0 = 0 to Rtt.
    # text self T: Eq. 6 Rtt = I + T·I = [[2, 1], [0, 3]]
    #              Eq. 7 Rti = C + T·C, T·C = [[1+.5, 0+.5], [0+1, 0+1]] = [[1.5, .5], [1, 1]]
    #                    Rti = [[2.5, .5], [1.5, 1.5]]
    events = [cross_ev("t", "i", C_TI, 0), self_ev("t", TXT_SELF, 1)]
    R = rules.chefer_relevancy(events, {"t": 2, "i": 2})
    close(R[("t", "i")], [[2.5, 0.5], [1.5, 1.5]])
    close(R[("t", "t")], [[2.0, 1.0], [0.0, 3.0]])
    close(R[("i", "i")], [[1.0, 0.0], [0.0, 1.0]])  # a text layer does not touch image rows
    close(R[("i", "t")], [[0.0, 0.0], [0.0, 0.0]])


# ------------------------------------------------------------------------------------------ Eqs. 8-9


def test_rownorm_and_eq8_9_zero_row_stays_zero():
    close(rules.rownorm(T([[0.0, 0.0], [1.0, 3.0]])), [[0.0, 0.0], [0.25, 0.75]])
    # R - I = [[0, 0], [1, 2]] -> rownorm [[0, 0], [1/3, 2/3]] -> + I = [[1, 0], [1/3, 5/3]]
    out = rules.residual_normalize(T([[1.0, 0.0], [1.0, 3.0]]))
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, T([[1.0, 0.0], [1 / 3, 5 / 3]]), atol=1e-12, rtol=0)
    close(rules.residual_normalize(torch.eye(3)), torch.eye(3).tolist())  # all rows zero after -I


# ------------------------------------------------------------------------------------- Eqs. 10 and 11


def _bimodal_prefix():
    # text self:  Rtt = I + TXT_SELF = [[2, 1], [0, 3]]
    # image self: Rii = I + IMG_SELF = [[1, 1], [1, 2]];  Rti, Rit stay 0 (Eq. 7 of zeros)
    return [self_ev("t", TXT_SELF, 0), self_ev("i", IMG_SELF, 1)]


def test_eq10_eq11_text_image_sequential():
    # Normalised self-relevancies before the cross layers (Eqs. 8-9):
    #   R̄tt: Rtt - I = [[1, 1], [0, 2]] -> rownorm [[.5, .5], [0, 1]] -> +I = [[1.5, .5], [0, 2]]
    #   R̄ii: Rii - I = [[0, 1], [1, 1]] -> rownorm [[0, 1], [.5, .5]] -> +I = [[1, 1], [.5, 1.5]]
    # Block 2, cross t->i with C:
    #   Eq. 10: C R̄ii = [[1, 1], [.5*1 + .5*.5, .5*1 + .5*1.5]] = [[1, 1], [.75, 1.25]]
    #           R̄ttᵀ = [[1.5, 0], [.5, 2]] ; R̄ttᵀ (C R̄ii) = [[1.5, 1.5], [.5 + 1.5, .5 + 2.5]]
    #           Rti = [[1.5, 1.5], [2, 3]]
    #   Eq. 11: Rtt += C Rit = C·0 = 0
    # Block 3, cross i->t with D (swaps rows), state after block 2:
    #   Eq. 10: D R̄tt = [[0, 2], [1.5, .5]]; R̄iiᵀ = [[1, .5], [1, 1.5]]
    #           R̄iiᵀ (D R̄tt) = [[0 + .75, 2 + .25], [0 + 2.25, 2 + .75]] = [[.75, 2.25], [2.25, 2.75]]
    #   Eq. 11: Rii += D Rti = [[2, 3], [1.5, 1.5]] -> Rii = [[3, 4], [2.5, 3.5]]
    events = _bimodal_prefix() + [cross_ev("t", "i", C_TI, 2), cross_ev("i", "t", D_IT, 3)]
    R = rules.chefer_relevancy(events, {"t": 2, "i": 2})
    close(R[("t", "i")], [[1.5, 1.5], [2.0, 3.0]])
    close(R[("t", "t")], [[2.0, 1.0], [0.0, 3.0]])
    close(R[("i", "t")], [[0.75, 2.25], [2.25, 2.75]])
    close(R[("i", "i")], [[3.0, 4.0], [2.5, 3.5]])


def test_parallel_block_reads_pre_block_state():
    # Same two cross layers but in ONE block (LXMERT computes both directions in parallel):
    # both read the state after the prefix, where Rti = Rit = 0, so both Eq. 11 additions are 0:
    #   Rti = [[1.5, 1.5], [2, 3]] and Rit = [[.75, 2.25], [2.25, 2.75]] (as above: same R̄tt, R̄ii)
    #   Rii stays [[1, 1], [1, 2]]  (sequentially it became [[3, 4], [2.5, 3.5]])
    parallel = _bimodal_prefix() + [cross_ev("t", "i", C_TI, 2), cross_ev("i", "t", D_IT, 2)]
    sequential = _bimodal_prefix() + [cross_ev("t", "i", C_TI, 2), cross_ev("i", "t", D_IT, 3)]
    Rp = rules.chefer_relevancy(parallel, {"t": 2, "i": 2})
    Rs = rules.chefer_relevancy(sequential, {"t": 2, "i": 2})
    close(Rp[("t", "i")], [[1.5, 1.5], [2.0, 3.0]])
    close(Rp[("i", "t")], [[0.75, 2.25], [2.25, 2.75]])
    close(Rp[("t", "t")], [[2.0, 1.0], [0.0, 3.0]])
    close(Rp[("i", "i")], [[1.0, 1.0], [1.0, 2.0]])
    assert not torch.allclose(Rp[("i", "i")], Rs[("i", "i")])


def test_encoder_decoder_eq11_adds_nothing():
    E = [[1.0, 1.0], [0.0, 2.0]]  # encoder self
    S = [[1.0, 0.0], [1.0, 1.0]]  # decoder self
    X = [[1.0, 0.0], [0.5, 0.5]]  # decoder -> encoder cross (decoder queries, encoder keys)
    S2 = [[0.0, 1.0], [0.0, 0.0]]  # a second decoder self layer after the cross layer
    # enc self: Ree = [[2, 1], [0, 3]], Red stays 0. dec self: Rdd = [[2, 0], [1, 2]], Rde stays 0.
    # R̄ee = [[1.5, .5], [0, 2]] (as R̄tt above)
    # R̄dd: Rdd - I = [[1, 0], [1, 1]] -> rownorm [[1, 0], [.5, .5]] -> +I = [[2, 0], [.5, 1.5]]
    # Eq. 10: X R̄ee = [[1.5, .5], [.75, 1.25]]; R̄ddᵀ = [[2, .5], [0, 1.5]]
    #         Rde = [[3 + .375, 1 + .625], [1.125, 1.875]] = [[3.375, 1.625], [1.125, 1.875]]
    # Eq. 11: Rdd += X Red = X·0 = 0
    events = [self_ev("enc", E, 0), self_ev("dec", S, 1), cross_ev("dec", "enc", X, 2)]
    R = rules.chefer_relevancy(events, {"enc": 2, "dec": 2})
    close(R[("dec", "enc")], [[3.375, 1.625], [1.125, 1.875]])
    close(R[("dec", "dec")], [[2.0, 0.0], [1.0, 2.0]])
    close(R[("enc", "enc")], [[2.0, 1.0], [0.0, 3.0]])
    close(R[("enc", "dec")], [[0.0, 0.0], [0.0, 0.0]])
    # Second decoder self layer:
    #   Eq. 7: Rde += S2 Rde = [[1.125, 1.875], [0, 0]] -> [[4.5, 3.5], [1.125, 1.875]]
    #   Eq. 6: Rdd += S2 Rdd = [[1, 2], [0, 0]] -> [[3, 2], [1, 2]]
    R = rules.chefer_relevancy(events + [self_ev("dec", S2, 3)], {"enc": 2, "dec": 2})
    close(R[("dec", "enc")], [[4.5, 3.5], [1.125, 1.875]])
    close(R[("dec", "dec")], [[3.0, 2.0], [1.0, 2.0]])


# ------------------------------------------------------------------------------------------ baselines

# Two layers, two heads, two tokens.
LAYER1 = T([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [1.0, 0.0]]])  # mean_h = [[.5, .5], [.5, .5]]
LAYER2 = T([[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]])  # mean_h = [[1, 0], [.5, .5]]


def test_rollout_two_tokens():
    # Â1 = rownorm([[1.5, .5], [.5, 1.5]]) = [[.75, .25], [.25, .75]]
    # Â2 = rownorm([[2, 0], [.5, 1.5]])    = [[1, 0], [.25, .75]]
    # R = Â2 Â1 = [[.75, .25], [.25*.75 + .75*.25, .25*.25 + .75*.75]] = [[.75, .25], [.375, .625]]
    # (the other order, Â1 Â2, would give [[.8125, .1875], ...])
    close(rules.rollout([LAYER1, LAYER2]), [[0.75, 0.25], [0.375, 0.625]])


def test_raw_attention_last_layer_mean_over_heads():
    close(rules.raw_attention(LAYER2), [[1.0, 0.0], [0.5, 0.5]])


def test_attn_gradcam():
    A = T([[[0.5, 0.5], [1.0, 0.0]], [[0.0, 1.0], [0.25, 0.75]]])
    dA = T([[[1.0, 2.0], [3.0, -2.0]], [[-1.0, -2.0], [-3.0, 2.0]]])
    # w0 = mean(1, 2, 3, -2) = 1 ; w1 = mean(-1, -2, -3, 2) = -1
    # w0 A0 = [[.5, .5], [1, 0]] ; w1 A1 = [[0, -1], [-.25, -.75]]
    # mean_h = [[.25, -.25], [.375, -.375]] -> clamp at 0 -> [[.25, 0], [.375, 0]]
    close(rules.attn_gradcam(A, dA), [[0.25, 0.0], [0.375, 0.0]])


def test_attention_sum():
    # sum over heads: layer1 [[1, 1], [1, 1]], layer2 [[2, 0], [1, 1]]; total [[3, 1], [2, 2]]
    # rows normalised to 1: [[.75, .25], [.5, .5]]
    close(rules.attention_sum([LAYER1, LAYER2]), [[0.75, 0.25], [0.5, 0.5]])


# ------------------------------------------------------------------------------- Hugging Face models


def _tiny_vit():
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    model = ViTForImageClassification(cfg).eval()
    return model, {"pixel_values": torch.randn(1, 3, 32, 32)}, 1 + (32 // 8) ** 2


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    model = BertForSequenceClassification(cfg).eval()
    ids = torch.tensor([[2, 17, 45, 9, 88, 3]])
    return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, ids.shape[1]


@pytest.mark.parametrize("build", [_tiny_vit, _tiny_bert], ids=["vit", "bert"])
def test_hf_reference_runs_on_tiny_models(build):
    model, inputs, n_tokens = build()
    impl_before = model.config._attn_implementation
    for method in METHODS:
        row = reference_classifier_row(model, inputs, target=None, method=method, readout=0)
        assert row.shape == (n_tokens,) and row.dtype == torch.float64
        assert torch.isfinite(row).all()
        assert row[0] == 0  # readout token's own entry zeroed (SPEC 1.8)
    mean_row = reference_classifier_row(model, inputs, target=2, method="chefer2021", readout="mean")
    assert mean_row.shape == (n_tokens,) and torch.isfinite(mean_row).all()
    # score_fn override == explaining the same logit
    by_fn = reference_classifier_row(
        model, inputs, method="chefer2021", score_fn=lambda out: out.logits[0, 1]
    )
    by_target = reference_classifier_row(model, inputs, target=1, method="chefer2021")
    torch.testing.assert_close(by_fn, by_target)
    # the model is left as found: attention implementation and no stray parameter gradients
    assert model.config._attn_implementation == impl_before
    assert all(p.grad is None for p in model.parameters())
