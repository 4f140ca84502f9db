"""AttnLRP / CP-LRP (SPEC_LRP L6) for ONE sample, in float64, as an explicit reverse relevance pass.

Independent of models/lrp: the forward is recomputed here from the stock model's weights, op by op, on a tape;
the reverse pass then maps the relevance R (not a gradient) at each op's output to its inputs by the papers'
rules, written as divisions (a ⊘ b = 0 where b = 0). Local autograd is used only inside a rule, as the
vector-Jacobian product of a *linear* map (reshapes, rotary, centring, …) or of one bilinear product.

Starts at the hidden states entering each tower's first block (taken from a plain forward of the stock model)
with R = the target score at the end. Works for ViT / DeiT, BERT / RoBERTa / DistilBERT classifiers, CLIP
(score = logits_per_image[0, 0]) and LlamaForCausalLM (score = a logit at one position). Slow on purpose.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

F64 = torch.float64


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a ⊘ b: a / b, and 0 where b = 0."""
    return torch.where(b == 0, torch.zeros_like(a), a / torch.where(b == 0, torch.ones_like(b), b))


def _vjp(f: Callable, x: torch.Tensor, cotangent: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(x), x, cotangent)
    return grad


@dataclass(eq=False)
class Node:
    value: torch.Tensor
    relevance: torch.Tensor | None = None

    def receive(self, r: torch.Tensor) -> None:
        self.relevance = r if self.relevance is None else self.relevance + r


@dataclass
class Tape:
    rule: str  # "attnlrp" or "cp_lrp"
    ops: list = field(default_factory=list)  # (output node, input nodes, rule: R_out -> [R_in, ...])

    def _record(self, value, inputs, rule) -> Node:
        out = Node(value.detach())
        self.ops.append((out, inputs, rule))
        return out

    def reverse(self, root: Node, seed: torch.Tensor) -> None:
        root.receive(seed)
        for out, inputs, rule in reversed(self.ops):
            if out.relevance is not None:
                for node, r in zip(inputs, rule(out.relevance), strict=True):
                    node.receive(r)

    # -- ops, each with its rule
    def linear(self, x: Node, module) -> Node:
        """ε-rule (ε → 0), the bias in the denominator: R_x = x ⊙ Wᵀ(R ⊘ y)."""
        w = module.weight.detach().to(F64)
        y = x.value @ w.T + (0 if module.bias is None else module.bias.detach().to(F64))
        return self._record(y, [x], lambda r: [x.value * (_div(r, y) @ w)])

    def linear_map(self, x: Node, f: Callable) -> Node:
        """Any bias-free linear map y = f(x), ε-rule: R_x = x ⊙ Jᵀ(R ⊘ y)."""
        y = f(x.value)
        return self._record(y, [x], lambda r: [x.value * _vjp(f, x.value, _div(r, y))])

    def add(self, a: Node, b: Node) -> Node:
        """ε-rule on a sum: each operand in proportion to its value."""
        y = a.value + b.value
        return self._record(y, [a, b], lambda r: [a.value * _div(r, y), b.value * _div(r, y)])

    def divide_by_constant(self, x: Node, scale: torch.Tensor) -> Node:
        """x / σ with σ a constant of the forward (the norms' rule): identity, R_x = R."""
        return self._record(x.value / scale, [x], lambda r: [r])

    def affine(self, x: Node, weight, bias) -> Node:
        """Element-wise w ⊙ x + b, ε-rule (b absorbs)."""
        w = 1.0 if weight is None else weight.detach().to(F64)
        y = x.value * w + (0 if bias is None else bias.detach().to(F64))
        return self._record(y, [x], lambda r: [x.value * w * _div(r, y)])

    def activation(self, x: Node, f: Callable) -> Node:
        """AttnLRP: identity rule R_x = R. CP-LRP: gradient × input, R_x = x ⊙ f'(x) ⊙ (R ⊘ y)."""
        y = f(x.value)
        if self.rule == "attnlrp":
            return self._record(y, [x], lambda r: [r])
        return self._record(y, [x], lambda r: [x.value * _vjp(f, x.value, _div(r, y))])

    def bilinear(self, u: Node, w: Node, equation: str, constant_first: bool = False) -> Node:
        """Z = Σ_p u_p w_p (an einsum): ε over the sum, then the uniform rule, ½ of each product to each factor.
        `constant_first` (CP-LRP's A·V): u is a constant, all relevance goes to w."""
        z = torch.einsum(equation, u.value, w.value)

        def rule(r):
            s = _div(r, z)
            grad_u = _vjp(lambda t: torch.einsum(equation, t, w.value), u.value, s)
            grad_w = _vjp(lambda t: torch.einsum(equation, u.value, t), w.value, s)
            if constant_first:
                return [torch.zeros_like(u.value), w.value * grad_w]
            return [0.5 * u.value * grad_u, 0.5 * w.value * grad_w]

        return self._record(z, [u, w], rule)

    def softmax(self, x: Node, allowed: torch.Tensor | None) -> Node:
        """AttnLRP: R_x,i = x_i (R_i − s_i Σ_j R_j), 0 at masked entries. CP-LRP: A is a constant, R_x = 0."""
        scores = x.value if allowed is None else x.value.masked_fill(~allowed, float("-inf"))
        s = scores.softmax(-1)

        def rule(r):
            if self.rule == "cp_lrp":
                return [torch.zeros_like(x.value)]
            rx = x.value * (r - s * r.sum(-1, keepdim=True))
            return [rx if allowed is None else rx.masked_fill(~allowed, 0.0)]

        return self._record(s, [x], rule)

    def product(self, a: Node, b: Node, share: float | None = None) -> Node:
        """Element-wise a ⊙ b. AttnLRP: ½ R to each factor. CP-LRP: gradient × input, R to each."""
        share = share if share is not None else 0.5 if self.rule == "attnlrp" else 1.0
        return self._record(a.value * b.value, [a, b], lambda r: [share * r, share * r])

    # -- composite ops
    def norm(self, x: Node, module, centred: bool) -> Node:
        eps = getattr(module, "eps", getattr(module, "variance_epsilon", None))
        v = x.value
        if centred:
            x = self.linear_map(x, lambda t: t - t.mean(-1, keepdim=True))
            spread = v.var(-1, unbiased=False, keepdim=True)
        else:
            spread = v.pow(2).mean(-1, keepdim=True)
        normed = self.divide_by_constant(x, torch.sqrt(spread + eps))
        return self.affine(normed, getattr(module, "weight", None), getattr(module, "bias", None))

    def l2_normalize(self, x: Node) -> Node:
        return self.divide_by_constant(x, x.value.norm(dim=-1, keepdim=True))

    def pick(self, x: Node, index) -> Node:
        return self.linear_map(x, lambda t: t[index])


@dataclass
class Attention:
    """Where one block's attention weights are and how its heads are laid out."""

    q: object
    k: object
    v: object
    o: object
    heads: int
    kv_heads: int
    causal: bool = False
    rotary: tuple[torch.Tensor, torch.Tensor] | None = None  # (cos, sin), (n, head_dim)


def _rotate_half(t):
    half = t.shape[-1] // 2
    return torch.cat((-t[..., half:], t[..., :half]), -1)


def attention(tape: Tape, h: Node, spec: Attention) -> Node:
    n = h.value.shape[0]
    d = spec.q.weight.shape[0] // spec.heads

    def heads(x: Node, count: int) -> Node:
        return tape.linear_map(x, lambda t: t.reshape(n, count, d).transpose(0, 1))

    q, k, v = heads(tape.linear(h, spec.q), spec.heads), heads(tape.linear(h, spec.k), spec.kv_heads), \
        heads(tape.linear(h, spec.v), spec.kv_heads)
    if spec.rotary is not None:
        cos, sin = (t.to(F64) for t in spec.rotary)
        q, k = (tape.linear_map(x, lambda t: t * cos + _rotate_half(t) * sin) for x in (q, k))
    if spec.kv_heads < spec.heads:
        groups = spec.heads // spec.kv_heads
        k, v = (tape.linear_map(x, lambda t: t.repeat_interleave(groups, 0)) for x in (k, v))
    scores = tape.linear_map(tape.bilinear(q, k, "hid,hjd->hij"), lambda t: t * d ** -0.5)
    allowed = torch.ones(n, n, dtype=torch.bool).tril() if spec.causal else None
    a = tape.softmax(scores, allowed)
    context = tape.bilinear(a, v, "hij,hjd->hid", constant_first=tape.rule == "cp_lrp")
    context = tape.linear_map(context, lambda t: t.transpose(0, 1).reshape(n, spec.heads * d))
    return tape.linear(context, spec.o)


def _mlp(tape: Tape, h: Node, fc1, act, fc2) -> Node:
    return tape.linear(tape.activation(tape.linear(h, fc1), act), fc2)


def _pre_ln_block(tape, h, norm1, spec, norm2, mlp: Callable, centred=True) -> Node:
    h = tape.add(h, attention(tape, tape.norm(h, norm1, centred), spec))
    return tape.add(h, mlp(tape.norm(h, norm2, centred)))


def _post_ln_block(tape, h, spec, norm1, mlp: Callable, norm2) -> Node:
    h = tape.norm(tape.add(attention(tape, h, spec), h), norm1, True)
    return tape.norm(tape.add(mlp(h), h), norm2, True)


def _first_block_input(model, block, **inputs) -> torch.Tensor:
    """The hidden states (one sample) entering `block` in a plain forward of the stock model."""
    seen = {}

    def hook(module, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        handle.remove()
    return seen["x"][0].to(F64)


@dataclass
class Reference:
    relevance: dict[str, torch.Tensor]  # tower -> (n_tokens,)
    score: float  # the explained score, from this file's own forward
    totals: dict[str, float] = field(default_factory=dict)  # tower -> Σ R


def _explain(tape: Tape, entries: dict[str, Node], score: Node) -> Reference:
    tape.reverse(score, score.value)
    relevance = {name: (node.relevance if node.relevance is not None else torch.zeros_like(node.value)).sum(-1)
                 for name, node in entries.items()}
    return Reference(relevance, float(score.value), {n: float(r.sum()) for n, r in relevance.items()})


def _heads_of(config) -> tuple[int, int]:
    heads = getattr(config, "num_attention_heads", None) or config.n_heads
    return heads, getattr(config, "num_key_value_heads", None) or heads


def vit_reference(model, pixel_values: torch.Tensor, target: int, rule: str) -> Reference:
    """ViTForImageClassification / DeiTForImageClassification: the [CLS] logit `target`."""
    base = model.vit if hasattr(model, "vit") else model.deit
    heads, _ = _heads_of(model.config)
    tape = Tape(rule)
    x0 = Node(_first_block_input(model, base.layers[0], pixel_values=pixel_values))
    h = x0
    for layer in base.layers:
        a, m = layer.attention, layer.mlp
        spec = Attention(a.q_proj, a.k_proj, a.v_proj, a.o_proj, heads, heads)
        h = _pre_ln_block(tape, h, layer.layernorm_before, spec, layer.layernorm_after,
                          lambda t, m=m: _mlp(tape, t, m.fc1, m.activation_fn, m.fc2))
    logits = tape.linear(tape.pick(tape.norm(h, base.layernorm, True), 0), model.classifier)
    return _explain(tape, {"image": x0}, tape.pick(logits, target))


def _text_layers(encoder):
    return encoder.transformer.layer if hasattr(encoder, "transformer") else encoder.encoder.layer


def _text_encoder(tape: Tape, encoder, x0: Node) -> Node:
    """The layers of a BertModel / RobertaModel / DistilBertModel (post-LN blocks)."""
    heads, _ = _heads_of(encoder.config)
    h = x0
    for layer in _text_layers(encoder):
        if hasattr(layer, "sa_layer_norm"):  # DistilBERT
            a, f = layer.attention, layer.ffn
            spec = Attention(a.q_lin, a.k_lin, a.v_lin, a.out_lin, heads, heads)
            h = _post_ln_block(tape, h, spec, layer.sa_layer_norm,
                               lambda t, f=f: _mlp(tape, t, f.lin1, f.activation, f.lin2), layer.output_layer_norm)
        else:
            s = layer.attention.self
            spec = Attention(s.query, s.key, s.value, layer.attention.output.dense, heads, heads)
            h = _post_ln_block(tape, h, spec, layer.attention.output.LayerNorm,
                               lambda t, layer=layer: _mlp(tape, t, layer.intermediate.dense,
                                                           layer.intermediate.intermediate_act_fn,
                                                           layer.output.dense), layer.output.LayerNorm)
    return h


def text_classifier_reference(model, input_ids: torch.Tensor, target: int, rule: str) -> Reference:
    """BERT / RoBERTa / DistilBERT *ForSequenceClassification, one unpadded sample: the logit `target`."""
    encoder = getattr(model, model.base_model_prefix)
    tape = Tape(rule)
    x0 = Node(_first_block_input(model, _text_layers(encoder)[0], input_ids=input_ids))
    cls = tape.pick(_text_encoder(tape, encoder, x0), 0)
    if hasattr(model, "pre_classifier"):  # DistilBERT: pre_classifier → ReLU → classifier
        logits = tape.linear(tape.activation(tape.linear(cls, model.pre_classifier), torch.relu), model.classifier)
    elif hasattr(model, "bert"):  # pooler: dense → tanh, then the classifier
        pooled = tape.activation(tape.linear(cls, model.bert.pooler.dense), torch.tanh)
        logits = tape.linear(pooled, model.classifier)
    else:  # RobertaClassificationHead: dense → tanh → out_proj
        head = model.classifier
        logits = tape.linear(tape.activation(tape.linear(cls, head.dense), torch.tanh), head.out_proj)
    return _explain(tape, {"text": x0}, tape.pick(logits, target))


def mean_pool_reference(model, input_ids: torch.Tensor, target: int, rule: str) -> Reference:
    """models.heads.MeanPoolingClassifier over a BERT-family encoder, one unpadded sample: mean over the tokens,
    the L2 norm held constant (when it normalises), the head's logit `target`."""
    tape = Tape(rule)
    x0 = Node(_first_block_input(model, _text_layers(model.encoder)[0], input_ids=input_ids,
                                 attention_mask=torch.ones_like(input_ids)))
    pooled = tape.linear_map(_text_encoder(tape, model.encoder, x0), lambda t: t.mean(0))
    if model.normalize:
        pooled = tape.l2_normalize(pooled)
    return _explain(tape, {"text": x0}, tape.pick(tape.linear(pooled, model.head), target))


def _clip_tower(tape: Tape, tower, x0: Node, heads: int, causal: bool) -> Node:
    h = x0
    for layer in tower.encoder.layers:
        a, m = layer.self_attn, layer.mlp
        spec = Attention(a.q_proj, a.k_proj, a.v_proj, a.out_proj, heads, heads, causal=causal)
        h = _pre_ln_block(tape, h, layer.layer_norm1, spec, layer.layer_norm2,
                          lambda t, m=m: _mlp(tape, t, m.fc1, m.activation_fn, m.fc2))
    return h


def clip_reference(model, input_ids: torch.Tensor, pixel_values: torch.Tensor, rule: str) -> Reference:
    """CLIPModel, one (image, text) pair, score = logits_per_image[0, 0]: the embeddings' L2 norms constant and
    the image·text product split ½ / ½ (for both rules; see models/lrp's clip_pair_forward)."""
    vision, text = model.vision_model, model.text_model
    tape = Tape(rule)
    inputs = dict(input_ids=input_ids, pixel_values=pixel_values)
    xi = Node(_first_block_input(model, vision.encoder.layers[0], **inputs))
    xt = Node(_first_block_input(model, text.encoder.layers[0], **inputs))
    hi = _clip_tower(tape, vision, xi, model.config.vision_config.num_attention_heads, causal=False)
    ht = _clip_tower(tape, text, xt, model.config.text_config.num_attention_heads, causal=True)
    eot = int((input_ids[0] == model.config.text_config.eos_token_id).int().argmax())
    image = tape.linear(tape.norm(tape.pick(hi, 0), vision.post_layernorm, True), model.visual_projection)
    words = tape.linear(tape.pick(tape.norm(ht, text.final_layer_norm, True), eot), model.text_projection)
    product = tape.product(tape.l2_normalize(image), tape.l2_normalize(words), share=0.5)
    score = tape.linear_map(product, lambda t: t.sum() * model.logit_scale.detach().to(F64).exp())
    return _explain(tape, {"image": xi, "text": xt}, score)


def llama_reference(model, input_ids: torch.Tensor, position: int, target: int, rule: str) -> Reference:
    """LlamaForCausalLM, one unpadded sample: the logit `target` at `position`."""
    base, cfg = model.model, model.config
    heads, kv_heads = _heads_of(cfg)
    tape = Tape(rule)
    x0 = Node(_first_block_input(model, base.layers[0], input_ids=input_ids))
    n = x0.value.shape[0]
    cos, sin = base.rotary_emb(x0.value[None].float(), torch.arange(n)[None])
    h = x0
    for layer in base.layers:
        a, m = layer.self_attn, layer.mlp
        spec = Attention(a.q_proj, a.k_proj, a.v_proj, a.o_proj, heads, kv_heads, causal=True,
                         rotary=(cos[0], sin[0]))

        def gated(t, m=m):
            return tape.linear(tape.product(tape.activation(tape.linear(t, m.gate_proj), m.act_fn),
                                            tape.linear(t, m.up_proj)), m.down_proj)

        h = _pre_ln_block(tape, h, layer.input_layernorm, spec, layer.post_attention_layernorm, gated,
                          centred=False)
    logits = tape.linear(tape.pick(tape.norm(h, base.norm, False), position), model.lm_head)
    return _explain(tape, {"text": x0}, tape.pick(logits, target))
