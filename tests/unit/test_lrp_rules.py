"""The Chefer-style LRP layer rules (models/lrp/rules.py) on hand-computed tiny cases (SPEC_LRP L1-L2)."""

import pytest
import torch
from attn_audit.models.lrp import rules

D = torch.float64


def t(*values):
    return torch.tensor(values, dtype=D)


def close(actual, expected, rtol=1e-7):
    torch.testing.assert_close(actual, torch.as_tensor(expected, dtype=D), rtol=rtol, atol=1e-12)


def test_safe_divide_shifts_by_1e9_and_zeroes_exact_zeros():
    a, b = t(1.0, 2.0, 3.0, 4.0), t(2.0, 0.0, -1e-9, -4.0)
    out = rules.safe_divide(a, b)
    # b + 1e-9 whatever b's sign; b = 0 -> 0; b = -1e-9 would give 0, the official code then uses +1e-9
    assert out[0].item() == 1.0 / (2.0 + 1e-9)
    assert out[1].item() == 0.0
    assert out[2].item() == pytest.approx(3.0 / 1e-9)
    assert out[3].item() == 4.0 / (-4.0 + 1e-9)
    assert torch.isfinite(rules.safe_divide(t(1.0), t(0.0))).all()


# x = (1, -2), W = [[1, -1], [2, 3]]: x⁺ = (1, 0), x⁻ = (0, -2), W⁺ = [[1, 0], [2, 3]], W⁻ = [[0, -1], [0, 0]]
X, W = t(1.0, -2.0), t([1.0, -1.0], [2.0, 3.0])


def test_linear_ours_shared_denominator_by_hand():
    # Z = x⁺W⁺ᵀ + x⁻W⁻ᵀ = (1 + 2, 2 + 0) = (3, 2); R = (0.9, 0.1) -> s = (0.3, 0.05)
    # sW⁺ = (0.3 + 0.1, 0.15), sW⁻ = (0, -0.3) -> R_in = (1·0.4, -2·-0.3) = (0.4, 0.6)
    out = rules.linear_ours(X, W, t(0.9, 0.1))
    close(out, [0.4, 0.6])
    assert out.sum().item() == pytest.approx(1.0, rel=1e-8)  # conserves


def test_linear_lrp_separate_denominators_by_hand():
    # Z1 = x⁺W⁺ᵀ = (1, 2), Z2 = x⁻W⁻ᵀ = (2, 0): s1 = (0.9, 0.05), s2 = (0.45, 0 [Z2 = 0])
    # x⁺ ⊙ s1W⁺ = (0.9 + 0.1, 0) = (1.0, 0); x⁻ ⊙ s2W⁻ = (0, -2·-0.45) = (0, 0.9)
    close(rules.linear_lrp(X, W, t(0.9, 0.1)), [1.0, 0.9])


def test_linear_lrp_doubles_the_total_when_both_parts_are_nonzero():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 64, generator=g, dtype=D)  # wide enough that no part is 0
    weight = torch.randn(4, 64, generator=g, dtype=D)
    R = torch.rand(5, 4, generator=g, dtype=D)
    assert rules.linear_lrp(x, weight, R).sum().item() == pytest.approx(2 * R.sum().item(), rel=1e-6)
    assert rules.linear_ours(x, weight, R).sum().item() == pytest.approx(R.sum().item(), rel=1e-6)


def test_linear_ours_on_a_fused_matrix_is_the_sum_over_its_row_blocks():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 6, generator=g, dtype=D)
    weight = torch.randn(9, 6, generator=g, dtype=D)
    R = torch.randn(3, 9, generator=g, dtype=D)
    parts = sum(rules.linear_ours(x, weight[i:i + 3], R[:, i:i + 3]) for i in (0, 3, 6))
    close(rules.linear_ours(x, weight, R), parts, rtol=1e-10)


def test_add_lrp_is_a_plain_gi_split():
    # Z = (2, 2), R = (1, 1) -> s = 1/2: R1 = (0.5, 1.5), R2 = (0.5, -0.5)
    r1, r2 = rules.add_lrp(t(1.0, 3.0), t(1.0, -1.0), t(1.0, 1.0))
    close(r1, [0.5, 1.5])
    close(r2, [0.5, -0.5])


def test_add_ours_rescales_each_branch_per_sample_and_conserves():
    # x1 = (2, 1), x2 = (-1, 1), R = (1, 1): Z = (1, 2), a = (2, 0.5), b = (-1, 0.5); A = 2.5, B = -0.5, T = 2
    # a ← a · (2·2.5/3)/2.5 = a·2/3 = (4/3, 1/3); b ← b · (2·0.5/3)/(-0.5) = b·(-2/3) = (2/3, -1/3): signs flip
    x1, x2, R = t([2.0, 1.0]), t([-1.0, 1.0]), t([1.0, 1.0])
    a, b = rules.add_ours(x1, x2, R)
    close(a, [[4 / 3, 1 / 3]])
    close(b, [[2 / 3, -1 / 3]])
    assert (a.sum() + b.sum()).item() == pytest.approx(2.0)
    # a second, different sample in the batch changes nothing for the first (the official sum is per batch)
    a2, b2 = rules.add_ours(torch.cat([x1, 5 * x2]), torch.cat([x2, x1]), torch.cat([R, t([3.0, -1.0])]))
    close(a2[:1], a)
    close(b2[:1], b)
    torch.testing.assert_close(a2.sum(1) + b2.sum(1), t(2.0, 2.0))


def test_add_ours_zero_branch_total_gets_zero():
    a, b = rules.add_ours(t([1.0, 3.0]), t([1.0, -1.0]), t([1.0, 1.0]))  # b = (0.5, -0.5): B = 0
    close(a, [[0.5, 1.5]])
    close(b, [[0.0, 0.0]])


def test_add_broadcast_operand_gets_one_relevance_per_sample():
    pos = t([[1.0, 1.0]])  # (1, n=1, D=2) position embedding
    x = t([[1.0, 3.0]], [[3.0, 1.0]])  # (2, 1, 2)
    _, r_pos = rules.add_lrp(x, pos, torch.ones(2, 1, 2, dtype=D))
    close(r_pos, [[[0.5, 0.25]], [[0.25, 0.5]]])


def test_clone_sums_and_zeroes_where_the_input_is_zero():
    close(rules.clone(t(2.0, 0.0, -1.0), t(1.0, 1.0, 1.0)), [2 / (2 + 1e-9), 0.0, -1 / (-1 + 1e-9)])


def test_qk_split_by_hand():
    # q = (1, 2), k = (3, -1) as (n, d=1): Z = [[3, -1], [6, -2]], R = [[1, 0], [.5, .5]]
    # -> S = R ⊘ Z = [[1/3, 0], [1/12, -1/4]]
    # R_q = q ⊙ (S k) = (1·1, 2·(1/4 + 1/4)) = (1, 1); R_k = k ⊙ (Sᵀ q) = (3·(1/3 + 1/6), -1·(2·-1/4)) = (1.5, 0.5)
    Rq, Rk = rules.qk_split(t([1.0], [2.0]), t([3.0], [-1.0]), t([1.0, 0.0], [0.5, 0.5]))
    close(Rq, [[1.0], [1.0]])
    close(Rk, [[1.5], [0.5]])  # each operand carries the whole ΣR = 2


def test_av_split_by_hand():
    # A = [[.5, .5], [1, 0]], v = (2, 4): Z = (3, 2), R = (.6, 1) -> S = (.2, .5)
    # R_A = A ⊙ (S vᵀ) = [[.2, .4], [1, 0]]; R_v = v ⊙ (Aᵀ S) = (2·.6, 4·.1) = (1.2, .4)
    RA, Rv = rules.av_split(t([0.5, 0.5], [1.0, 0.0]), t([2.0], [4.0]), t([0.6], [1.0]))
    close(RA, [[0.2, 0.4], [1.0, 0.0]])
    close(Rv, [[1.2], [0.4]])


def test_patch_conv_zb_by_hand():
    # 1x1 "patch", channels x = (.5, -1, 2): l = -1, h = 2; W = (1, -2, .5), W⁺ = (1, 0, .5), W⁻ = (0, -2, 0)
    # x·W − l·W⁺ − h·W⁻ per channel = (.5 + 1, 2 + 4, 1 + .5) = (1.5, 6, 1.5), Z = 9 -> R_in = (1/6, 2/3, 1/6)
    x = t(0.5, -1.0, 2.0).view(1, 3, 1, 1)
    weight = t(1.0, -2.0, 0.5).view(1, 3, 1, 1)
    out = rules.patch_conv_zb(x, weight, torch.ones(1, 1, 1, 1, dtype=D), stride=1, padding=0)
    close(out.flatten(), [1 / 6, 2 / 3, 1 / 6])


def test_patch_conv_zb_positive_conservative_and_per_image_bounds():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=D)
    x[1] *= 10  # a different range: each image uses its own bounds
    weight = torch.randn(5, 3, 4, 4, generator=g, dtype=D)
    R = torch.rand(2, 5, 2, 2, generator=g, dtype=D)
    out = rules.patch_conv_zb(x, weight, R, stride=4, padding=0)
    assert out.shape == x.shape and bool((out >= 0).all())
    torch.testing.assert_close(out.sum((1, 2, 3)), R.sum((1, 2, 3)), rtol=1e-8, atol=0)
    close(rules.patch_conv_zb(x[1:], weight, R[1:], stride=4, padding=0), out[1:], rtol=1e-10)


def test_scatter_token_puts_the_relevance_on_the_picked_token_only():
    out = rules.scatter_token(t([2.0, 0.0]), torch.tensor([1]), 3, t([1.0, 1.0]))
    close(out, [[[0.0, 0.0], [2 / (2 + 1e-9), 0.0], [0.0, 0.0]]])
