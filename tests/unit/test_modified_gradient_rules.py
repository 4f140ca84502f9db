"""The AttnLRP / CP-LRP rules in gradient form (models/lrp) on hand-computed tiny cases: relevance = x ⊙ the
modified gradient equals the rule written as a relevance map, and conserves exactly where the rule does."""

from __future__ import annotations

import pytest
import torch
from attn_audit.models.engine import attention_registry
from attn_audit.models.errors import AttnAuditError
from attn_audit.models.lrp.gradient_rules import attnlrp_attention, cp_lrp_attention, identity_rule
from attn_audit.models.lrp.modified_gradient import conservation, modified_backward
from torch import nn


@pytest.fixture(autouse=True)
def _float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def input_relevance(net: nn.Module, x: torch.Tensor, rule: str | None) -> torch.Tensor:
    """x ⊙ ∂(Σ net(x))/∂x, under `rule` (None: the plain gradient)."""
    x = x.clone().requires_grad_()
    if rule is None:
        (g,) = torch.autograd.grad(net(x).sum(), x)
    else:
        with modified_backward(net, rule):
            (g,) = torch.autograd.grad(net(x).sum(), x)
    return x.detach() * g


def seeded(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(sum(shape)))


def test_linear_then_layernorm_holds_sigma_constant_by_hand():
    torch.manual_seed(0)
    lin1, norm, lin2 = nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 1)
    nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    net = nn.Sequential(lin1, norm, lin2)
    x = seeded(2, 3)
    h = lin1(x).detach()
    sigma = (h.var(-1, unbiased=False, keepdim=True) + norm.eps).sqrt()
    g_hat = norm.weight.detach() * lin2.weight.detach()[0]  # ∂y/∂(normalised), per unit
    g_h = (g_hat - g_hat.mean()) / sigma  # centring is linear, σ a constant
    want = x * (g_h @ lin1.weight.detach())
    for rule in ("attnlrp", "cp_lrp"):
        assert torch.allclose(input_relevance(net, x, rule), want, atol=1e-12)
    assert not torch.allclose(input_relevance(net, x, None), want, atol=1e-6)  # the plain gradient differs


def test_a_bias_free_stack_with_a_beta_free_layernorm_conserves_exactly():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 6, bias=False), nn.LayerNorm(6, bias=False), nn.Linear(6, 4, bias=False),
                        nn.GELU(), nn.Linear(4, 1, bias=False))
    x = seeded(3, 5)
    score = net(x)[:, 0].detach()
    r = input_relevance(net, x, "attnlrp")
    assert torch.allclose(r.sum(-1), score, rtol=1e-12, atol=0)
    assert float(conservation(r.sum(-1), score).max()) < 1e-12
    plain = input_relevance(net, x, "cp_lrp")  # CP-LRP: GELU by its gradient, which does not conserve
    assert float(conservation(plain.sum(-1), score).min()) > 1e-3


def test_the_bias_absorbs_its_share():
    lin = nn.Linear(3, 1)
    x = seeded(4, 3)
    r = input_relevance(lin, x, "attnlrp")
    assert torch.allclose(r.sum(-1), (lin(x)[:, 0] - lin.bias).detach(), atol=1e-12)


def test_identity_rule_by_hand_and_zero_at_zero():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.7], requires_grad=True)
    y = nn.functional.gelu(x)
    c = torch.tensor([0.5, -1.0, 2.0, 3.0, -0.25])
    (g,) = torch.autograd.grad((identity_rule(x, y) * c).sum(), x)
    want = torch.where(x == 0, 0.0, c * y / torch.where(x == 0, 1.0, x)).detach()
    assert torch.equal(g, want)
    assert torch.allclose(x.detach() * g, (y * c).detach(), atol=1e-15)  # R_x = R_y
    assert torch.equal(identity_rule(x, y), y)  # the forward value is kept


class TinyGatedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(3, 5, bias=False), nn.Linear(3, 5, bias=False)
        self.down_proj, self.act_fn = nn.Linear(5, 1, bias=False), nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def test_gated_mlp_gives_half_to_each_factor_and_conserves():
    torch.manual_seed(2)
    mlp = TinyGatedMLP()
    x = seeded(2, 3)
    gate, up = mlp.gate_proj(x).detach(), mlp.up_proj(x).detach()
    act = nn.functional.silu(gate)
    g_product = 0.5 * mlp.down_proj.weight.detach()[0]
    g_gate = g_product * up * act / gate  # ½ · the product's gradient, then the identity rule
    g_up = g_product * act
    want = x * (g_gate @ mlp.gate_proj.weight.detach() + g_up @ mlp.up_proj.weight.detach())
    r = input_relevance(mlp, x, "attnlrp")
    assert torch.allclose(r, want, atol=1e-12)
    assert torch.allclose(r.sum(-1), mlp(x)[:, 0].detach(), rtol=1e-12, atol=0)


def test_softmax_rule_is_the_softmax_gradient():
    x = seeded(6).requires_grad_()
    c = seeded(6, 1)[:, 0]
    s = x.softmax(-1)
    (g,) = torch.autograd.grad((s * c).sum(), x)
    big_r = (s * c).detach()  # relevance at the output: s ⊙ g_s
    sd = s.detach()
    assert torch.allclose(x.detach() * g, x.detach() * (big_r - sd * big_r.sum()), atol=1e-15)


class AttentionStub(nn.Module):
    is_causal = False


def attention_inputs():
    b, h, n, d = 2, 2, 4, 3
    return [seeded(b, h, n, d + i).narrow(-1, 0, d).contiguous().requires_grad_() for i in range(3)]


def explicit_attnlrp(q, k, v, c, scaling):
    """The AttnLRP relevance at q, k, v as written in the paper (R propagated, not g), seeded R_O = O ⊙ c."""
    q, k, v = q.detach(), k.detach(), v.detach()
    z = q @ k.transpose(-1, -2)
    scores = z * scaling
    a = scores.softmax(-1)
    o = a @ v
    s_o = (o * c) / o
    r_a = 0.5 * a * (s_o @ v.transpose(-1, -2))  # uniform rule on A·V
    r_v = 0.5 * v * (a.transpose(-1, -2) @ s_o)
    r_scores = scores * (r_a - a * r_a.sum(-1, keepdim=True))  # softmax linearisation
    s_z = r_scores / z  # × scaling is linear (R passes unchanged), then the uniform rule on Q·Kᵀ
    r_q = 0.5 * q * (s_z @ k)
    r_k = 0.5 * k * (s_z.transpose(-1, -2) @ q)
    return r_q, r_k, r_v


def test_attnlrp_attention_is_the_explicit_rule_and_quarters_q_k_halves_v():
    q, k, v = attention_inputs()
    scaling = 0.7
    out, _ = attnlrp_attention(AttentionStub(), q, k, v, None, scaling=scaling)
    c = seeded(*out.shape)  # out is (b, n, h, d)
    dq, dk, dv = torch.autograd.grad((out * c).sum(), [q, k, v])
    want = explicit_attnlrp(q, k, v, c.transpose(1, 2), scaling)
    for got, x, w in zip((dq, dk, dv), (q, k, v), want, strict=True):
        assert torch.allclose(x.detach() * got, w, atol=1e-12)
    plain = nn.functional.scaled_dot_product_attention(q, k, v, scale=scaling).transpose(1, 2)
    pq, pk, pv = torch.autograd.grad((plain * c).sum(), [q, k, v])
    assert torch.allclose(dq, pq / 4) and torch.allclose(dk, pk / 4) and torch.allclose(dv, pv / 2)


def test_cp_lrp_attention_holds_the_probabilities_constant():
    q, k, v = attention_inputs()
    out, _ = cp_lrp_attention(AttentionStub(), q, k, v, None, scaling=0.5)
    c = seeded(*out.shape)
    dq, dk, dv = torch.autograd.grad((out * c).sum(), [q, k, v], allow_unused=True)
    assert dq is None and dk is None
    a = (q @ k.transpose(-1, -2) * 0.5).softmax(-1).detach()
    assert torch.allclose(dv, a.transpose(-1, -2) @ c.transpose(1, 2), atol=1e-12)
    r_v = v.detach() * dv  # all of A·V's relevance goes to V: Σ R_v = Σ O ⊙ c
    assert torch.allclose(r_v.sum(), (out * c).sum().detach(), rtol=1e-12)


class WrongRMSNorm(nn.Module):
    """Gemma-style (1 + w): not the form the rules model."""

    def __init__(self):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.full((4,), 0.5)), 1e-6

    def forward(self, x):
        return (1 + self.weight) * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def test_a_norm_of_another_form_is_refused_and_hooks_are_removed():
    net = nn.Sequential(nn.Linear(3, 4), WrongRMSNorm())
    with pytest.raises(AttnAuditError, match="WrongRMSNorm"):
        input_relevance(net, seeded(2, 3), "attnlrp")
    assert all(not m._forward_hooks for m in net.modules())


def test_conservation_is_relative_and_absolute_at_a_zero_score():
    got = conservation(torch.tensor([1.1, 0.5, 0.0]), torch.tensor([1.0, 0.0, -2.0]))
    assert torch.allclose(got, torch.tensor([0.1, 0.5, 1.0]))


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown LRP rule"), modified_backward(nn.Linear(1, 1), "lrp"):
        pass


def test_registration_is_refcounted_per_name():
    from transformers import AttentionInterface

    name = "attn_audit_test_registry"
    with attention_registry.registered(name, attnlrp_attention):
        with attention_registry.registered(name, attnlrp_attention):
            assert name in AttentionInterface._global_mapping
        assert name in AttentionInterface._global_mapping  # still one user
    assert name not in AttentionInterface._global_mapping
