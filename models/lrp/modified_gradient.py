"""AttnLRP (Achtibat et al., ICML 2024) and CP-LRP (Ali et al., ICML 2022) as input × modified gradient on stock
Hugging Face models (SPEC_LRP L6), batched, at about the memory of one sdpa forward + backward.

**Why a gradient suffices.** Every rule below maps the relevance R_y at an op's output to R_x = x ⊙ (a linear map
of R_y / y). So propagate g = R / x, the relevance per unit activation, instead of R: autograd carries g if
each op's backward is the rule's map, and R = x ⊙ g wherever it is read. Starting from g = 1 at the target logit
gives R = the logit there. Op by op (ε → 0; the ε only stabilises y ≈ 0, where R = y g is small too):

- Linear, LRP-ε / LRP-0, bias in the denominator: R_x = x ⊙ Wᵀ(R_y / y) ⇒ g_x = Wᵀ g_y, the **plain gradient**.
  The bias absorbs Σ b ⊙ g_y. The same for every other linear op: scaling, rotary embeddings, repeat_kv,
  reshapes, mean pooling, the causal / padding masks (masked positions get 0).
- Residual Add, ε-rule: R_a = a ⊙ R_y / (a + b) ⇒ g_a = g_y: the plain gradient (and conservative).
- Fan-out (a tensor read by several ops): R_x = Σ_k R_k ⇒ g_x = Σ_k g_k, as autograd sums.
- Softmax s = softmax(x), linearisation rule R_x,i = x_i (R_i − s_i Σ_j R_j): with R_i = s_i g_i this is
  g_x,i = s_i (g_i − Σ_j s_j g_j), **the plain softmax gradient**. It absorbs x_i s_i Σ_j R_j.
- Bilinear matmul Z = Σ_p u_p w_p (q·kᵀ and A·v), ε over the sum, then the uniform rule on each product: each
  factor gets ½ R_p ⇒ g_u = ½ ∂⟨Z, g_Z⟩/∂u, **half the plain gradient** of each operand. The backward is linear
  in the incoming g, so the halvings compose by multiplication: through A·v, g_V = ½ (the plain dV) and g_A = ½;
  the softmax passes g_A on linearly; q·kᵀ halves again. Through the attention core: **dQ, dK × ¼, dV × ½** of
  sdpa's own backward, so sdpa runs forward and backward and A is never stored.
- Element-wise non-linearities (GELU, SiLU, tanh, quick_gelu, …), identity rule R_x = R_y ⇒ g_x = g_y · y / x
  (0 where x = 0). ReLU's identity rule is its gradient, so ReLUs are left alone.
- Gated MLP act(gate(x)) ⊙ up(x): a product of two factors, each gets ½ ⇒ the gradient into the product is
  halved (the act keeps its identity rule).
- LayerNorm / RMSNorm: the identity rule on the division by σ = holding σ (the RMS) constant, as CP-LRP's LN rule
  does; the centring (x − μ, linear) and the affine γ, β then take the ε-rule = their gradient (β absorbs).
  This module holds σ per token constant; the L2 normalisation of a mean-pool head and of CLIP's embeddings
  likewise.

**CP-LRP**: the attention probabilities constant (the attention runs on Q, K detached: O = A V is linear in V and
gets all of A·V's relevance), LayerNorm σ constant, everything else the plain gradient (no identity rule, no
halving).

**Readout**: relevance at the hidden states entering each tower's first block (`first_blocks`), R = x ⊙ g
summed over the hidden dimension → (B, n_tokens) per tower. That tensor, not the word embeddings, because it is
the one every family has (ViT patches + [CLS], BERT after its embedding LayerNorm, CLIP after pre_layrnorm) and
it still carries the position embeddings' share, which a word-embedding readout would drop; the graph is cut
there, so the backward stops at the first block. Σ R equals the target score minus what the biases, the β of
the norms and the softmax absorb; `conservation` measures the gap per sample.

**Families**: ViT / DeiT, BERT / RoBERTa (its classification head's functional tanh included) / DistilBERT,
mean-pool classifiers, CLIP towers (`clip_pair_forward`), Llama-style decoders (RMSNorm, SiLU-gated MLP, rotary:
Llama, Qwen2, Mistral) and GPT-2, one backward per generated-token column.
The attention must go through transformers' AttentionInterface; `token_relevance` refuses a model whose forward
made no attention call through it. The pass selects its own attention implementation, so it cannot run inside
a fused capture of the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import torch
from attn_audit.models.engine.attention_registry import attention_function, attention_models
from attn_audit.models.errors import AttnAuditError
from attn_audit.models.lrp.gradient_rules import (
    attnlrp_attention,
    cp_lrp_attention,
    frozen_scale_norm,
    identity_rule,
    scale_gradient,
)
from torch import nn

Rule = Literal["attnlrp", "cp_lrp"]
RULES: tuple[str, ...] = ("attnlrp", "cp_lrp")
# Forward values of a recomputed norm vs the module's own: a norm we would model wrongly (e.g. Gemma's 1 + w)
# is refused instead of explained with the wrong backward.
NORM_CHECK_TOLERANCE = 1e-2

_attention_calls: ContextVar[list[int] | None] = ContextVar("attn_audit_lrp_attention_calls", default=None)


def _counted(function: Callable) -> Callable:
    def attention(*args, **kwargs):
        calls = _attention_calls.get()
        if calls is not None:
            calls[0] += 1
        return function(*args, **kwargs)

    return attention


_ATTENTION = {"attnlrp": ("attn_audit_attnlrp", _counted(attnlrp_attention)),
              "cp_lrp": ("attn_audit_cp_lrp", _counted(cp_lrp_attention))}


def _activation_classes() -> tuple[type, ...]:
    import transformers.activations as acts

    names = ("GELUActivation", "GELUTanh", "NewGELUActivation", "FastGELUActivation", "QuickGELUActivation",
             "SiLUActivation", "AccurateGELUActivation", "MishActivation", "ClippedGELUActivation")
    return (nn.GELU, nn.SiLU, nn.Tanh, nn.Mish, *(getattr(acts, n) for n in names if hasattr(acts, n)))


@dataclass
class ModifiedBackward:
    """What `modified_backward` yields: the rule, and how many attention calls went through its function."""

    rule: str
    _calls: list[int]

    @property
    def attention_calls(self) -> int:
        return self._calls[0]


@contextmanager
def modified_backward(model: nn.Module, rule: Rule) -> Iterator[ModifiedBackward]:
    """Inside, `model`'s backward is `rule`'s relevance propagation in gradient form (module docstring); forward
    values are unchanged. Every hook, attribute and the attention implementation are restored on exit."""
    if rule not in RULES:
        raise ValueError(f"unknown LRP rule {rule!r}; expected one of {RULES}")
    state = ModifiedBackward(rule, [0])
    token = _attention_calls.set(state._calls)
    try:
        with ExitStack() as stack:
            _install(model, rule, stack)
            name, function = _ATTENTION[rule]
            for pretrained in attention_models(model):
                try:
                    stack.enter_context(attention_function(pretrained, name, function))
                except (ValueError, NotImplementedError) as e:
                    raise AttnAuditError(f"{type(pretrained).__name__} cannot run its attention through "
                                         f"transformers' AttentionInterface, which {rule} needs: {e}") from e
            yield state
    finally:
        _attention_calls.reset(token)


def _install(model: nn.Module, rule: str, stack: ExitStack) -> None:
    from attn_audit.models.heads import MeanPoolingClassifier

    activations = _activation_classes()
    for module in model.modules():
        kind = _norm_kind(module)
        if kind is not None:
            stack.callback(module.register_forward_hook(_norm_hook(kind)).remove)
        elif isinstance(module, MeanPoolingClassifier) and module.normalize:
            _hold_l2_norm(module, stack)
        elif rule == "attnlrp":
            if isinstance(module, activations):
                stack.callback(module.register_forward_hook(_identity_hook).remove)
            elif all(hasattr(module, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")):
                stack.callback(module.down_proj.register_forward_pre_hook(_halve_product).remove)
            elif type(module).__name__ == "RobertaClassificationHead":
                _identity_between(module.dense, module.out_proj, stack)


def _norm_kind(module: nn.Module) -> str | None:
    name = type(module).__name__
    if "RMSNorm" in name:
        return "rms"
    if isinstance(module, nn.LayerNorm) or "LayerNorm" in name:
        return "layer"
    return None


def _norm_hook(kind: str):
    centred = kind == "layer"

    def hook(module, args, output):
        x = args[0]
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", None))
        shape = getattr(module, "normalized_shape", (x.shape[-1],))
        if eps is None or len(tuple(shape)) != 1:
            raise AttnAuditError(f"{type(module).__name__}: the LRP rules model norms over the last dimension "
                                 "with an eps attribute; this one is not")
        xf = x.to(_at_least_float32(x.dtype))
        spread = xf.var(-1, unbiased=False, keepdim=True) if centred else xf.pow(2).mean(-1, keepdim=True)
        inv_scale = torch.rsqrt(spread + eps)
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        _check_norm(module, xf, inv_scale, weight, bias, centred, output)
        return frozen_scale_norm(x, output, inv_scale, weight, centred)

    return hook


@torch.no_grad()
def _check_norm(module, xf, inv_scale, weight, bias, centred, output) -> None:
    expected = (xf - xf.mean(-1, keepdim=True) if centred else xf) * inv_scale
    if weight is not None:
        expected = expected * weight.to(xf.dtype)
    if bias is not None:
        expected = expected + bias.to(xf.dtype)
    out = output.to(xf.dtype)
    if (expected - out).abs().max() > NORM_CHECK_TOLERANCE * (out.abs().max() + 1):
        raise AttnAuditError(f"{type(module).__name__} is not a LayerNorm / RMSNorm of the form the LRP rules "
                             "model (w ⊙ (x − μ)/σ + b or w ⊙ x / rms); AttnLRP / CP-LRP cannot explain this model")


def _identity_hook(module, args, output):
    return identity_rule(args[0], output)


def _halve_product(module, args):
    return (scale_gradient(args[0], 0.5), *args[1:])


def _identity_between(producer: nn.Module, consumer: nn.Module, stack: ExitStack) -> None:
    """A functional activation between two modules (RoBERTa's head: dense → tanh → dropout → out_proj): the
    identity rule from the consumer's input back to the producer's output."""
    pre_activation: dict[str, torch.Tensor] = {}

    def keep(module, args, output):
        pre_activation["x"] = output

    def replace(module, args):
        return (identity_rule(pre_activation.pop("x"), args[0]), *args[1:])

    stack.callback(producer.register_forward_hook(keep).remove)
    stack.callback(consumer.register_forward_pre_hook(replace).remove)


def _hold_l2_norm(model: nn.Module, stack: ExitStack) -> None:
    """A mean-pool head normalising the pooled vector p: its pool runs unnormalised inside, and the head's input
    becomes p / ‖p‖ (F.normalize's value) with ‖p‖ held constant."""
    model.normalize = False
    stack.callback(setattr, model, "normalize", True)

    def normalise(module, args):
        return (l2_normalize_frozen(args[0]), *args[1:])

    stack.callback(model.head.register_forward_pre_hook(normalise).remove)


def l2_normalize_frozen(p: torch.Tensor) -> torch.Tensor:
    """F.normalize(p, dim=-1), back-propagating with ‖p‖ constant (the norms' rule)."""
    norm = p.to(_at_least_float32(p.dtype)).norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return frozen_scale_norm(p, nn.functional.normalize(p, dim=-1), 1.0 / norm, None, False)


def clip_pair_forward(model: nn.Module, **inputs):
    """Run a CLIPModel on (image, text) pairs: (its outputs, the (B,) scores logits_per_image[i, i] recomputed so
    the rules apply to the head: the projected embeddings' L2 norms held constant, the bilinear image·text
    product split ½ / ½ — the uniform rule, used for CP-LRP too, whose paper has no rule for it; with the plain
    gradient each side would get the whole score)."""
    projected: dict[str, torch.Tensor] = {}
    with ExitStack() as stack:
        for name in ("visual_projection", "text_projection"):
            def keep(module, args, output, name=name):
                projected[name] = output
            stack.callback(getattr(model, name).register_forward_hook(keep).remove)
        outputs = model(**inputs)
    image, text = (l2_normalize_frozen(projected[n]) for n in ("visual_projection", "text_projection"))
    return outputs, scale_gradient(image * text, 0.5).sum(-1) * model.logit_scale.exp()


def first_blocks(model: nn.Module) -> dict[str, nn.Module]:
    """The first block of each tower's layer stack (a ModuleList named `layer` / `layers` / GPT-2's `h`, not inside
    another), by qualified name: where `token_relevance` reads the relevance."""
    stacks: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if (isinstance(module, nn.ModuleList) and len(module) and name.rsplit(".", 1)[-1] in ("layer", "layers", "h")
                and not any(name.startswith(f"{s}.") for s in stacks)):
            stacks[name] = module
    return {f"{name}.0": stack[0] for name, stack in stacks.items()}


@dataclass
class TokenRelevance:
    relevance: dict[str, torch.Tensor]  # entry name -> (B, n) — (B, T, n) for (B, T) scores
    scores: torch.Tensor  # the explained scores, detached: (B,) or (B, T)
    conservation: torch.Tensor  # like scores: |Σ R − score| / |score| (|Σ R − score| where score = 0)


def token_relevance(model: nn.Module, rule: Rule, forward: Callable[[], torch.Tensor],
                    entries: Mapping[str, nn.Module] | None = None) -> TokenRelevance:
    """Run `forward()` (the model's forward, returning the scores to explain: (B,), or (B, T) for T targets per
    sample) under `rule`, and back-propagate each score column with seed 1, sample by sample independent.
    Relevance is read at the hidden states entering each module of `entries` (default `first_blocks(model)`)."""
    entries = dict(first_blocks(model) if entries is None else entries)
    if not entries:
        raise AttnAuditError(f"{type(model).__name__}: no layer stack found to read the relevance at")
    inputs: dict[str, torch.Tensor] = {}
    with ExitStack() as stack, torch.enable_grad():
        for name, module in entries.items():
            stack.callback(module.register_forward_pre_hook(_entry_leaf(inputs, name), with_kwargs=True).remove)
        state = stack.enter_context(modified_backward(model, rule))
        scores = forward()
        if state.attention_calls == 0:
            raise AttnAuditError(f"{type(model).__name__}'s forward made no attention call through transformers' "
                                 f"AttentionInterface, so {rule}'s attention rule cannot apply")
        missing = sorted(set(entries) - set(inputs))
        if missing:
            raise AttnAuditError(f"the forward never ran {', '.join(missing)}: no relevance to read there")
        columns = scores[:, None] if scores.dim() == 1 else scores
        names = list(inputs)
        per_column = []
        for t in range(columns.shape[1]):
            grads = torch.autograd.grad(columns[:, t].sum(), [inputs[n] for n in names],
                                        retain_graph=t + 1 < columns.shape[1], allow_unused=True)
            per_column.append({n: _readout(inputs[n], g) for n, g in zip(names, grads, strict=True)})
    relevance = {n: torch.stack([c[n] for c in per_column], 1) for n in names}
    if scores.dim() == 1:
        relevance = {n: r[:, 0] for n, r in relevance.items()}
    scores = scores.detach()
    return TokenRelevance(relevance, scores, conservation(sum(r.sum(-1) for r in relevance.values()), scores))


def _entry_leaf(store: dict[str, torch.Tensor], name: str):
    """Pre-hook: the block's hidden-state input becomes a leaf that requires grad (the graph is cut there)."""

    def hook(module, args, kwargs):
        if name in store:
            raise AttnAuditError(f"{name} ran twice in one forward; token_relevance reads one pass")
        if args:
            store[name] = args[0].detach().requires_grad_()
            return (store[name], *args[1:]), kwargs
        store[name] = kwargs["hidden_states"].detach().requires_grad_()
        return args, {**kwargs, "hidden_states": store[name]}

    return hook


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _readout(x: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
    dtype = _at_least_float32(x.dtype)
    if grad is None:  # the scores do not depend on this tower
        return torch.zeros(x.shape[:-1], dtype=dtype, device=x.device)
    return (x.detach().to(dtype) * grad.to(dtype)).sum(-1)


def conservation(total: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """|Σ R − score| / |score| per sample (the absolute gap where the score is exactly 0)."""
    gap = (total.to(scores.dtype) - scores).abs()
    return torch.where(scores != 0, gap / torch.where(scores != 0, scores.abs(), 1), gap)
