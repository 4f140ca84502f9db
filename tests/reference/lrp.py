"""Per-sample Chefer-style LRP (SPEC_LRP L1-L2.5) in float64, written from the spec only, to check models/lrp.

One sample, no padding. The forward is recomputed here step by step in float64 from the stock modules'
parameters (Linears as x Wᵀ + b, attention written out head by head; LayerNorms and activations called one by
one), written on a *tape* of ops, and checked against the model's own output. The reverse pass walks the tape
backwards with a relevance per named tensor: a tensor used by several ops gets the Clone rule x ⊙ (ΣR_k ⊘ x);
every split is a gradient × input taken with autograd, as the official `gradprop`; the attention loops over heads.
(The clone after the pre-LN LayerNorm, feeding q, k and v, stands for the official fused qkv: it differs from it
only by the 1e-9 of ⊘.)

Streams: ViT / DeiT ("image"), BERT / RoBERTa / DistilBERT ("text"), CLIPModel ("image" and "text", each tower
from the pair start ĩ_d t̃_d / Σ_d ĩ_d t̃_d at its projection output).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

EPS = 1e-9
f64 = torch.float64


def sd(a, b):
    """a ⊘ b: a / (b + 1e-9), 0 where b is exactly 0, +1e-9 where b + 1e-9 is 0 (SPEC_LRP L1)."""
    den = b + EPS
    den[den == 0] = EPS
    out = a / den
    out[b == 0] = 0.0
    return out


def gi(fn, inputs, S):
    """Each input ⊙ ∂⟨fn(inputs), S⟩/∂input."""
    xs = [x.detach().clone().requires_grad_(True) for x in inputs]
    grads = torch.autograd.grad(fn(*xs), xs, S)
    return [x.detach() * g for x, g in zip(xs, grads)]


def linear_rule(x, W, R, rules):
    xp, xn, Wp, Wn = x.clamp(min=0), x.clamp(max=0), W.clamp(min=0), W.clamp(max=0)
    Z1, Z2 = xp @ Wp.T, xn @ Wn.T
    if rules == "ours":
        S1 = S2 = sd(R, Z1 + Z2)
    else:
        S1, S2 = sd(R, Z1), sd(R, Z2)
    (c1,) = gi(lambda t: t @ Wp.T, [xp], S1)
    (c2,) = gi(lambda t: t @ Wn.T, [xn], S2)
    return c1 + c2


def add_rule(a, b, R, rules):
    Ra, Rb = gi(lambda u, w: u + w, [a.expand_as(R), b.expand_as(R)], sd(R, a + b))
    if rules == "ours":  # one sample: the official whole-tensor sums are this sample's
        A, B, T = Ra.sum(), Rb.sum(), R.sum()
        Ra = Ra * sd(T * sd(A.abs(), A.abs() + B.abs()), A)
        Rb = Rb * sd(T * sd(B.abs(), A.abs() + B.abs()), B)
    return Ra, Rb


def zb_rule(x, W, R, stride):
    """x (C, H, W) one image; R (D, h, w)."""
    x = x[None]
    L = torch.full_like(x, x.min().item())
    H = torch.full_like(x, x.max().item())
    Wp, Wn = W.clamp(min=0), W.clamp(max=0)
    Z = F.conv2d(x, W, stride=stride) - F.conv2d(L, Wp, stride=stride) - F.conv2d(H, Wn, stride=stride) + EPS
    S = R[None] / Z
    (gx,) = gi(lambda t: F.conv2d(t, W, stride=stride), [x], S)
    (gl,) = gi(lambda t: F.conv2d(t, Wp, stride=stride), [L], S)
    (gh,) = gi(lambda t: F.conv2d(t, Wn, stride=stride), [H], S)
    return (gx - gl - gh)[0]


@dataclass
class Op:
    kind: str  # linear | add | identity | attention | select | cat | patch_conv
    out: str
    ins: list[str]
    arg: object = None


@dataclass
class Tape:
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    attn: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # attention op -> per-head A

    def put(self, kind, out, ins, value, arg=None):
        self.values[out] = value.detach()
        self.ops.append(Op(kind, out, ins, arg))
        return value

    def linear(self, out, x, module):
        W = module.weight
        y = self.values[x] @ W.T + (module.bias if module.bias is not None else 0)
        return self.put("linear", out, [x], y, W.detach())

    def add(self, out, a, b):
        return self.put("add", out, [a, b], self.values[a] + self.values[b])

    def identity(self, out, x, fn):
        return self.put("identity", out, [x], fn(self.values[x]))

    def attention(self, out, q, k, v, heads, scaling, causal):
        Q, K, V = self.values[q], self.values[k], self.values[v]
        n, d = Q.shape[0], Q.shape[1] // heads
        ctx, probs = torch.zeros_like(Q), []
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            scores = Q[:, sl] @ K[:, sl].T * scaling
            if causal:
                scores = scores + torch.full((n, n), float("-inf"), dtype=f64).triu(1)
            A = scores.softmax(-1)
            probs.append(A.detach())
            ctx[:, sl] = A @ V[:, sl]
        self.attn[out] = probs
        return self.put("attention", out, [q, k, v], ctx, heads)


def block(tape, i, layer, names, heads, scaling, pre_ln, causal=False):
    """One block on the tape; names: q k v o fc1 fc2 act ln1 ln2 (submodule paths). Input f"h{i}", output f"h{i+1}"."""
    m = {key: layer.get_submodule(path) for key, path in names.items()}
    h = f"h{i}"
    qkv_in = h
    if pre_ln:
        qkv_in = f"ln1_{i}"
        tape.identity(qkv_in, h, m["ln1"])
    for part in "qkv":
        tape.linear(f"{part}{i}", qkv_in, m[part])
    tape.attention(f"ctx{i}", f"q{i}", f"k{i}", f"v{i}", heads, scaling, causal)
    tape.linear(f"o{i}", f"ctx{i}", m["o"])
    tape.add(f"mid{i}", f"o{i}", h)
    mid = f"mid{i}"
    if not pre_ln:
        mid = f"midn{i}"
        tape.identity(mid, f"mid{i}", m["ln1"])
    mlp_in = mid
    if pre_ln:
        mlp_in = f"ln2_{i}"
        tape.identity(mlp_in, mid, m["ln2"])
    tape.linear(f"fc1_{i}", mlp_in, m["fc1"])
    tape.identity(f"act{i}", f"fc1_{i}", m["act"])
    tape.linear(f"fc2_{i}", f"act{i}", m["fc2"])
    if pre_ln:
        tape.add(f"h{i + 1}", f"fc2_{i}", mid)
    else:
        tape.add(f"sum{i}", f"fc2_{i}", mid)
        tape.identity(f"h{i + 1}", f"sum{i}", m["ln2"])


VIT = dict(q="attention.q_proj", k="attention.k_proj", v="attention.v_proj", o="attention.o_proj", fc1="mlp.fc1",
           fc2="mlp.fc2", act="mlp.activation_fn", ln1="layernorm_before", ln2="layernorm_after")
BERT = dict(q="attention.self.query", k="attention.self.key", v="attention.self.value", o="attention.output.dense",
            ln1="attention.output.LayerNorm", fc1="intermediate.dense", act="intermediate.intermediate_act_fn",
            fc2="output.dense", ln2="output.LayerNorm")
DISTILBERT = dict(q="attention.q_lin", k="attention.k_lin", v="attention.v_lin", o="attention.out_lin",
                  ln1="sa_layer_norm", fc1="ffn.lin1", act="ffn.activation", fc2="ffn.lin2", ln2="output_layer_norm")
CLIP = dict(q="self_attn.q_proj", k="self_attn.k_proj", v="self_attn.v_proj", o="self_attn.out_proj",
            fc1="mlp.fc1", act="mlp.activation_fn", fc2="mlp.fc2", ln1="layer_norm1", ln2="layer_norm2")


def vision_tokens(tape, pixels, conv, specials, pos):
    """[specials; conv(pixels)] + pos -> "h0" (before any LayerNorm of the caller)."""
    tape.values["pixels"] = pixels[0]
    patches = F.conv2d(pixels, conv.weight, conv.bias, stride=conv.stride)[0]  # (D, g, g)
    tape.put("patch_conv", "patches", ["pixels"], patches.flatten(1).T, (conv.weight.detach(), conv.stride,
                                                                       patches.shape[1:]))
    names = []
    for j, s in enumerate(specials):
        tape.values[f"special{j}"] = s.reshape(1, -1)
        names.append(f"special{j}")
    tape.put("cat", "tokens", [*names, "patches"], torch.cat([tape.values[x] for x in [*names, "patches"]]))
    tape.values["pos"] = pos.reshape(-1, pos.shape[-1])
    tape.add("emb", "tokens", "pos")


def vit_tape(model, pixels):
    base = model.base_model
    emb = base.embeddings
    specials = [emb.cls_token] + ([emb.distillation_token] if hasattr(emb, "distillation_token") else [])
    tape = Tape()
    vision_tokens(tape, pixels, emb.patch_embeddings.projection, specials, emb.position_embeddings)
    tape.identity("h0", "emb", lambda t: t)  # dropout
    cfg = model.config
    for i, layer in enumerate(base.layers):
        block(tape, i, layer, VIT, cfg.num_attention_heads, layer.attention.scaling, pre_ln=True)
    L = len(base.layers)
    tape.identity("final", f"h{L}", base.layernorm)
    if hasattr(model, "distillation_classifier"):
        for j, head in enumerate([model.cls_classifier, model.distillation_classifier]):
            tape.put("select", f"pool{j}", ["final"], tape.values["final"][j], j)
            tape.linear(f"head{j}", f"pool{j}", head)
        tape.add("headsum", "head0", "head1")
        tape.identity("out", "headsum", lambda t: t / 2)
    else:
        tape.put("select", "pool", ["final"], tape.values["final"][0], 0)
        tape.linear("out", "pool", model.classifier)
    return tape


def text_tape(model, input_ids):
    name = type(model).__name__
    ids = input_ids[0]
    n = len(ids)
    tape = Tape()
    distil = name.startswith("Distil")
    base = model.distilbert if distil else model.base_model
    emb = base.embeddings
    tape.values["word"] = emb.word_embeddings.weight[ids]
    offset = model.config.pad_token_id + 1 if name.startswith("Roberta") else 0  # RoBERTa counts from pad + 1
    tape.values["pos"] = emb.position_embeddings.weight[offset:offset + n]
    if distil:
        tape.add("emb", "word", "pos")
    else:
        tape.values["type"] = emb.token_type_embeddings.weight[torch.zeros(n, dtype=torch.long)]
        tape.add("wt", "word", "type")
        tape.add("emb", "wt", "pos")
    tape.identity("h0", "emb", emb.LayerNorm)
    layers = base.transformer.layer if distil else base.encoder.layer
    heads = model.config.n_heads if distil else model.config.num_attention_heads
    for i, layer in enumerate(layers):
        attention = layer.attention if distil else layer.attention.self
        block(tape, i, layer, DISTILBERT if distil else BERT, heads, attention.scaling, pre_ln=False)
    L = len(layers)
    tape.put("select", "pool", [f"h{L}"], tape.values[f"h{L}"][0], 0)
    if distil:
        first, act, last = model.pre_classifier, torch.relu, model.classifier
    elif name.startswith("Roberta"):
        first, act, last = model.classifier.dense, torch.tanh, model.classifier.out_proj
    else:
        first, act, last = base.pooler.dense, torch.tanh, model.classifier
    tape.linear("pooled", "pool", first)
    tape.identity("act", "pooled", act)
    tape.linear("out", "act", last)
    return tape


def clip_tapes(model, pixels, input_ids):
    vision, text = model.vision_model, model.text_model
    image = Tape()
    emb = vision.embeddings
    vision_tokens(image, pixels, emb.patch_embedding, [emb.class_embedding], emb.position_embedding.weight)
    image.identity("h0", "emb", vision.pre_layrnorm)
    for i, layer in enumerate(vision.encoder.layers):
        block(image, i, layer, CLIP, model.config.vision_config.num_attention_heads, layer.self_attn.scale, True)
    L = len(vision.encoder.layers)
    image.put("select", "pool", [f"h{L}"], image.values[f"h{L}"][0], 0)
    image.identity("pooled", "pool", vision.post_layernorm)
    image.linear("out", "pooled", model.visual_projection)

    ids = input_ids[0]
    txt = Tape()
    txt.values["word"] = text.embeddings.token_embedding.weight[ids]
    txt.values["pos"] = text.embeddings.position_embedding.weight[:len(ids)]
    txt.add("h0", "word", "pos")
    for i, layer in enumerate(text.encoder.layers):
        block(txt, i, layer, CLIP, model.config.text_config.num_attention_heads, layer.self_attn.scale, True,
              causal=True)
    L = len(text.encoder.layers)
    txt.identity("final", f"h{L}", text.final_layer_norm)
    eos = model.config.text_config.eos_token_id
    where = int(ids.argmax()) if eos == 2 else int((ids == eos).nonzero()[0])
    txt.put("select", "pool", ["final"], txt.values["final"][where], where)
    txt.linear("out", "pool", model.text_projection)
    return image, txt


def reverse(tape: Tape, start: torch.Tensor, rules: str) -> dict:
    """Walk the tape backwards from relevance `start` at "out"."""
    uses = Counter(x for op in tape.ops for x in op.ins)
    rel = {"out": start.to(f64)}
    result = {"attn_cam": {}, "context": {}}
    for op in reversed(tape.ops):
        if op.out not in rel:
            continue
        R = rel.pop(op.out)
        if uses[op.out] > 1:  # Clone
            R = tape.values[op.out] * sd(R, tape.values[op.out])
        result[op.out] = R
        xs = [tape.values[x] for x in op.ins]
        if op.kind == "linear":
            ins = [linear_rule(xs[0], op.arg.to(f64), R, rules)]
        elif op.kind == "add":
            ins = add_rule(xs[0], xs[1], R, rules)
        elif op.kind == "identity":
            ins = [R]
        elif op.kind == "select":
            full = torch.zeros_like(xs[0])
            full[op.arg] = xs[0][op.arg] * sd(R, xs[0][op.arg])
            ins = [full]
        elif op.kind == "cat":
            ins = list(torch.split(R, [x.shape[0] for x in xs]))
        elif op.kind == "patch_conv":
            W, stride, grid = op.arg
            ins = [zb_rule(xs[0], W.to(f64), R.T.reshape(-1, *grid), stride)]
        else:  # attention: R at the context, per head
            heads = op.arg
            d = xs[0].shape[1] // heads
            Rq, Rk, Rv = (torch.zeros_like(x) for x in xs)
            cams = []
            result["context"][op.out] = R
            for h, A in enumerate(tape.attn[op.out]):
                sl = slice(h * d, (h + 1) * d)
                q, k, v = xs[0][:, sl], xs[1][:, sl], xs[2][:, sl]
                RA, Rv_h = gi(lambda a, w: a @ w, [A, v], sd(R[:, sl], A @ v))
                RA, Rv[:, sl] = RA / 2, Rv_h / 2
                cams.append(RA)
                Rq_h, Rk_h = gi(lambda a, b: a @ b.T, [q, k], sd(RA, q @ k.T))
                Rq[:, sl], Rk[:, sl] = Rq_h / 2, Rk_h / 2
            result["attn_cam"][op.out] = torch.stack(cams)
            ins = [Rq, Rk, Rv]
        for name, r in zip(op.ins, ins):
            rel[name] = rel[name] + r if name in rel else r
    result.update({name: r for name, r in rel.items()})  # leaves: pixels, word, specials, pos
    return result


def _summary(result: dict, n_blocks: int) -> dict:
    cams = [result["attn_cam"][f"ctx{i}"] for i in range(n_blocks)]
    out = {"attn_cam": cams, "embeddings": result["h0"],
           "block_totals": torch.stack([result[f"h{i}"].sum() for i in range(n_blocks)]),
           "context_totals": torch.stack([result["context"][f"ctx{i}"].sum() for i in range(n_blocks)]),
           "tokens": result["tokens"] if "tokens" in result else result["word"], "pixels": None}
    if "pixels" in result:
        out["pixels"] = result["pixels"].sum(0)
    return out


def reference_lrp(model, inputs: dict, start: torch.Tensor | None = None, rules: str = "ours") -> dict:
    """Per-stream results for ONE unpadded sample: {"image"/"text": {"attn_cam": [(H, n, n)] bottom first,
    "embeddings": (n, D) at block 0's input, "tokens": (n, D) at the first embedding-Add operand, "pixels":
    (H, W) or None, "block_totals": (L,), "context_totals": (L,)}}.

    start: (n_outputs,) at the classifier output; None for CLIP (the pair start is computed here)."""
    model = copy.deepcopy(model).double().eval()
    values = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    for v in values.values():
        assert v.shape[0] == 1, "one sample"
    with torch.no_grad():
        expected = model(**values)
    name = type(model).__name__
    if name == "CLIPModel":
        image, text = clip_tapes(model, values["pixel_values"], values["input_ids"])
        i, t = image.values["out"], text.values["out"]
        torch.testing.assert_close(i / i.norm(), expected.image_embeds[0], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(t / t.norm(), expected.text_embeds[0], rtol=1e-9, atol=1e-10)
        share = (i / i.norm()) * (t / t.norm())
        start = sd(share, share.sum().expand_as(share))
        return {"image": _summary(reverse(image, start, rules), len(model.vision_model.encoder.layers)),
                "text": _summary(reverse(text, start, rules), len(model.text_model.encoder.layers))}
    if "pixel_values" in values:
        tape, stream = vit_tape(model, values["pixel_values"]), "image"
        n_blocks = len(model.base_model.layers)
    else:
        tape, stream = text_tape(model, values["input_ids"]), "text"
        n_blocks = model.config.n_layers if name.startswith("Distil") else model.config.num_hidden_layers
    torch.testing.assert_close(tape.values["out"], expected.logits[0], rtol=1e-9, atol=1e-10)
    return {stream: _summary(reverse(tape, start, rules), n_blocks)}
