"""Forward hooks on a stock Hugging Face model that record what the Chefer-style LRP reverse pass needs
(SPEC_LRP L5), per attention stream ("image", "text").

    with record(model) as rec:
        logits = model(**inputs).logits
    rec.streams["image"].blocks[3].q.y  # ...

Only the model's own modules are hooked (no forked model code, no class patching) and every hook is removed on exit.
Per block: the q / k / v / output / MLP Linears' inputs (and outputs where a rule needs them), the residual operand
of each Add, the scaling; per stream: the key mask (padding, causal), the pooled token and the Linears of the head,
the operands of the embedding Adds and, for images, the patch convolution's input. The attention probabilities are
not recorded: `attention_probs` recomputes them from q and k, which works under any attention implementation
(eager, sdpa, the engine's fused capture). Tensors are kept detached in the forward's dtype.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from attn_audit.models.errors import UnsupportedModelError


@dataclass
class LinearRecord:
    x: torch.Tensor  # the module's input
    weight: torch.Tensor  # (out, in); the bias never enters a rule
    y: torch.Tensor | None = None  # its output, bias included, kept where a rule needs it


@dataclass
class BlockRecord:
    """One transformer block, pre- or post-LN alike: h_mid = attention branch + residual1, out = MLP branch +
    residual2 (a post-LN block's LayerNorms after each Add are identities for relevance)."""

    q: LinearRecord
    k: LinearRecord
    v: LinearRecord
    o: LinearRecord  # x = the attention context, y = the attention branch
    fc1: LinearRecord
    fc2: LinearRecord  # y = the MLP branch
    residual1: torch.Tensor  # the block input (it fans out to the attention branch and the first Add)
    residual2: torch.Tensor  # h_mid (post-LN: after its LayerNorm), the MLP Add's other operand
    heads: int
    scaling: float


@dataclass
class HeadPath:
    """One pooled token and the Linears above it, top-down; everything between them (tanh, ReLU, LayerNorm,
    dropout) is an identity."""

    linears: list[LinearRecord]
    picked: torch.Tensor  # (B, D) the states of the pooled token
    token: torch.Tensor  # (B,) its index in the sequence


@dataclass
class PatchRecord:
    pixels: torch.Tensor  # (B, C, H, W) the convolution's input
    weight: torch.Tensor
    stride: tuple[int, int]
    padding: tuple[int, int]
    grid: tuple[int, int]  # the convolution's output size
    n_special: int  # [CLS] (+ DeiT's distillation token) before the patch tokens


@dataclass
class StreamRecord:
    blocks: list[BlockRecord]  # bottom first
    head: list[HeadPath]
    head_outputs: list[torch.Tensor] | None  # two heads averaged (DeiT with teacher): their outputs, for the Add
    embedding_adds: list[tuple[torch.Tensor, torch.Tensor]]  # top-down; the relevance follows the first operand
    key_mask: torch.Tensor | None  # (B, n) True = a real token; None = all
    causal: bool
    patch: PatchRecord | None


def attention_probs(q: torch.Tensor, k: torch.Tensor, scaling: float, key_mask: torch.Tensor | None = None,
                    causal: bool = False) -> torch.Tensor:
    """softmax(q kᵀ · scaling + mask) in q's dtype; q, k (B, heads, n, d). Masked keys get exactly 0."""
    scores = (q @ k.transpose(-1, -2)) * scaling
    n, m = scores.shape[-2:]
    allowed = torch.ones(n, m, dtype=torch.bool, device=q.device)
    if causal:
        allowed = allowed.tril()
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :].bool()
    return scores.masked_fill(~allowed, torch.finfo(scores.dtype).min).softmax(-1)


class _Taps:
    """Forward hooks that store detached tensors by name."""

    def __init__(self):
        self.seen: dict[str, object] = {}
        self.handles: list = []

    def input(self, module, key):
        def hook(_m, args, _out):
            self.seen[key] = args[0].detach()
        self.handles.append(module.register_forward_hook(hook))

    def output(self, module, key):
        def hook(_m, _args, out):
            self.seen[key] = (out[0] if isinstance(out, tuple) else out).detach()
        self.handles.append(module.register_forward_hook(hook))

    def linear(self, module, key, keep_output: bool = False):
        def hook(m, args, out):
            self.seen[key] = LinearRecord(args[0].detach(), m.weight.detach(), out.detach() if keep_output else None)
        self.handles.append(module.register_forward_hook(hook))

    def arguments(self, module, key, names):
        """Named arguments of a module call, given positionally or by keyword."""
        signature = inspect.signature(module.forward)

        def hook(_m, args, kwargs):
            bound = signature.bind_partial(*args, **kwargs).arguments
            self.seen[key] = {name: bound.get(name) for name in names}
        self.handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))

    def remove(self):
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


@dataclass(frozen=True)
class BlockLayout:
    """Where a block's parts are, as submodule paths of the layer."""

    q: str
    k: str
    v: str
    o: str
    fc1: str
    fc2: str
    attention: str  # holds the score scaling (`scaling` or `scale`)
    norms: tuple[str, str] | None = None  # pre-LN: the LayerNorms whose inputs are residual1 / residual2


VIT_BLOCK = BlockLayout("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj", "mlp.fc1",
                        "mlp.fc2", "attention", ("layernorm_before", "layernorm_after"))
BERT_BLOCK = BlockLayout("attention.self.query", "attention.self.key", "attention.self.value",
                         "attention.output.dense", "intermediate.dense", "output.dense", "attention.self")
DISTILBERT_BLOCK = BlockLayout("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                               "ffn.lin1", "ffn.lin2", "attention")
CLIP_BLOCK = BlockLayout("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                         "mlp.fc1", "mlp.fc2", "self_attn", ("layer_norm1", "layer_norm2"))
_KEPT_OUTPUTS = ("q", "k", "v", "o", "fc2")


def _attach_blocks(taps: _Taps, stream: str, layers, layout: BlockLayout):
    for i, layer in enumerate(layers):
        for part in ("q", "k", "v", "o", "fc1", "fc2"):
            taps.linear(layer.get_submodule(getattr(layout, part)), f"{stream}.{i}.{part}", part in _KEPT_OUTPUTS)
        for j, norm in enumerate(layout.norms or ()):
            taps.input(layer.get_submodule(norm), f"{stream}.{i}.residual{j + 1}")


def _blocks(seen, stream: str, layers, layout: BlockLayout, heads: int) -> list[BlockRecord]:
    blocks = []
    for i, layer in enumerate(layers):
        parts = {part: seen[f"{stream}.{i}.{part}"] for part in ("q", "k", "v", "o", "fc1", "fc2")}
        attention = layer.get_submodule(layout.attention)
        scaling = getattr(attention, "scaling", None) or attention.scale
        if layout.norms:
            residuals = seen[f"{stream}.{i}.residual1"], seen[f"{stream}.{i}.residual2"]
        else:  # post-LN: the block input feeds q/k/v, and the first Add's (normed) output feeds the MLP
            residuals = parts["q"].x, parts["fc1"].x
        blocks.append(BlockRecord(**parts, residual1=residuals[0], residual2=residuals[1], heads=heads,
                                  scaling=float(scaling)))
    return blocks


def _key_mask(seen, key="call") -> torch.Tensor | None:
    mask = seen.get(key, {}).get("attention_mask")
    return None if mask is None else mask.detach().bool()


# ---- families: attach(model, taps) registers the hooks, build(model, seen) assembles the streams


class _VisionTokens:
    """[special tokens; patch embeddings] + position embeddings, the patch embedding a 3-channel Conv2d."""

    def __init__(self, conv, specials, position=None):
        self.conv, self.specials, self.position = conv, specials, position

    def attach(self, taps: _Taps, stream: str):
        taps.input(self.conv, f"{stream}.pixels")
        taps.output(self.conv, f"{stream}.patches")
        if isinstance(self.position, torch.nn.Module):
            taps.output(self.position, f"{stream}.position")

    def build(self, seen, stream: str):
        patches = seen[f"{stream}.patches"]
        b, d = patches.shape[:2]
        tokens = torch.cat([s.detach().reshape(1, 1, d).expand(b, 1, d) for s in self.specials]
                           + [patches.flatten(2).transpose(1, 2)], dim=1)
        position = seen[f"{stream}.position"] if isinstance(self.position, torch.nn.Module) else self.position
        patch = PatchRecord(seen[f"{stream}.pixels"], self.conv.weight.detach(), self.conv.stride, self.conv.padding,
                            tuple(patches.shape[2:]), len(self.specials))
        return [(tokens, position.detach())], patch


class _ViT:
    def __init__(self, model):
        self.model, base = model, model.base_model
        emb = base.embeddings
        specials = [emb.cls_token] + ([emb.distillation_token] if hasattr(emb, "distillation_token") else [])
        self.tokens = _VisionTokens(emb.patch_embeddings.projection, specials, emb.position_embeddings)
        self.layers = base.layers if hasattr(base, "layers") else base.encoder.layer
        teacher = hasattr(model, "distillation_classifier")
        self.classifiers = [model.cls_classifier, model.distillation_classifier] if teacher else [model.classifier]

    def attach(self, taps):
        self.tokens.attach(taps, "image")
        _attach_blocks(taps, "image", self.layers, VIT_BLOCK)
        for i, head in enumerate(self.classifiers):
            taps.linear(head, f"head{i}", keep_output=True)

    def build(self, seen):
        adds, patch = self.tokens.build(seen, "image")
        heads = [seen[f"head{i}"] for i in range(len(self.classifiers))]
        b = heads[0].x.shape[0]
        paths = [HeadPath([h], h.x, torch.full((b,), i, dtype=torch.long, device=h.x.device))
                 for i, h in enumerate(heads)]
        blocks = _blocks(seen, "image", self.layers, VIT_BLOCK, self.model.config.num_attention_heads)
        outputs = [h.y for h in heads] if len(heads) == 2 else None
        return {"image": StreamRecord(blocks, paths, outputs, adds, None, False, patch)}


class _TextClassifier:
    """BERT / RoBERTa (word + token type, then + position) and DistilBERT (word + position); [CLS] pooled."""

    def __init__(self, model):
        self.model = model
        name = type(model).__name__
        if name.startswith("DistilBert"):
            base = model.distilbert
            self.layers, self.layout, self.n_heads = base.transformer.layer, DISTILBERT_BLOCK, model.config.n_heads
            self.head = [model.classifier, model.pre_classifier]
        else:
            base = model.base_model
            self.layers, self.layout = base.encoder.layer, BERT_BLOCK
            self.n_heads = model.config.num_attention_heads
            if name.startswith("Roberta"):
                self.head = [model.classifier.out_proj, model.classifier.dense]
            else:
                self.head = [model.classifier, base.pooler.dense]
        emb = base.embeddings
        self.embeddings = [emb.word_embeddings, emb.position_embeddings]
        if hasattr(emb, "token_type_embeddings"):
            self.embeddings.insert(1, emb.token_type_embeddings)

    def attach(self, taps):
        taps.arguments(self.model, "call", ("attention_mask",))
        for i, module in enumerate(self.embeddings):
            taps.output(module, f"embedding{i}")
        _attach_blocks(taps, "text", self.layers, self.layout)
        for i, module in enumerate(self.head):
            taps.linear(module, f"head{i}")

    def build(self, seen):
        parts = [seen[f"embedding{i}"] for i in range(len(self.embeddings))]
        adds = []  # word (+ token type) (+ position), bottom-up; reversed below
        total = parts[0]
        for part in parts[1:]:
            adds.append((total, part))
            total = total + part
        linears = [seen[f"head{i}"] for i in range(len(self.head))]
        b = linears[-1].x.shape[0]
        path = HeadPath(linears, linears[-1].x, torch.zeros(b, dtype=torch.long, device=linears[-1].x.device))
        blocks = _blocks(seen, "text", self.layers, self.layout, self.n_heads)
        return {"text": StreamRecord(blocks, [path], None, adds[::-1], _key_mask(seen), False, None)}


class _Clip:
    """CLIPModel: the vision tower pools [CLS] through post_layernorm, the text tower (causal) the EOS token after
    final_layer_norm; each then has its projection."""

    def __init__(self, model):
        self.model = model
        emb = model.vision_model.embeddings
        self.tokens = _VisionTokens(emb.patch_embedding, [emb.class_embedding], emb.position_embedding)

    def attach(self, taps):
        vision, text = self.model.vision_model, self.model.text_model
        taps.arguments(self.model, "call", ("attention_mask",))
        self.tokens.attach(taps, "image")
        _attach_blocks(taps, "image", vision.encoder.layers, CLIP_BLOCK)
        taps.input(vision.post_layernorm, "image.picked")
        taps.linear(self.model.visual_projection, "image.projection", keep_output=True)
        taps.input(text.embeddings.token_embedding, "text.ids")
        taps.output(text.embeddings.token_embedding, "text.word")
        taps.output(text.embeddings.position_embedding, "text.position")
        _attach_blocks(taps, "text", text.encoder.layers, CLIP_BLOCK)
        taps.linear(self.model.text_projection, "text.projection", keep_output=True)

    def eos_index(self, ids: torch.Tensor) -> torch.Tensor:
        """The token the text tower pools, by the stock model's own rule."""
        eos = self.model.text_model.eos_token_id
        return ids.argmax(-1) if eos == 2 else (ids == eos).int().argmax(-1)

    def build(self, seen):
        cfg, vision, text = self.model.config, self.model.vision_model, self.model.text_model
        adds, patch = self.tokens.build(seen, "image")
        image_proj, text_proj = seen["image.projection"], seen["text.projection"]
        picked = seen["image.picked"]
        image = StreamRecord(
            _blocks(seen, "image", vision.encoder.layers, CLIP_BLOCK, cfg.vision_config.num_attention_heads),
            [HeadPath([image_proj], picked, torch.zeros(picked.shape[0], dtype=torch.long, device=picked.device))],
            None, adds, None, False, patch)
        text_stream = StreamRecord(
            _blocks(seen, "text", text.encoder.layers, CLIP_BLOCK, cfg.text_config.num_attention_heads),
            [HeadPath([text_proj], text_proj.x, self.eos_index(seen["text.ids"]))],
            None, [(seen["text.word"], seen["text.position"])], _key_mask(seen), True, None)
        return {"image": image, "text": text_stream}


FAMILIES = {
    "ViTForImageClassification": _ViT, "DeiTForImageClassification": _ViT,
    "DeiTForImageClassificationWithTeacher": _ViT,
    "BertForSequenceClassification": _TextClassifier, "RobertaForSequenceClassification": _TextClassifier,
    "DistilBertForSequenceClassification": _TextClassifier,
    "CLIPModel": _Clip,
}


class LRPRecord:
    """What one forward recorded; `streams` is assembled on first use after the forward."""

    def __init__(self, family):
        self.family = family
        self.taps = _Taps()
        self._streams: dict[str, StreamRecord] | None = None

    @property
    def streams(self) -> dict[str, StreamRecord]:
        if self._streams is None:
            if not self.taps.seen:
                raise RuntimeError("nothing recorded: run the model's forward inside `with record(model)`")
            self._streams = self.family.build(self.taps.seen)
        return self._streams


@contextmanager
def record(model: torch.nn.Module):
    """Hooks on `model` for the length of the block; yields the LRPRecord the forward inside fills. A second
    forward inside the block overwrites the first."""
    family = FAMILIES.get(type(model).__name__)
    if family is None:
        raise UnsupportedModelError(f"Chefer-style LRP has no recording for {type(model).__name__}; supported: "
                                    f"{', '.join(FAMILIES)}")
    rec = LRPRecord(family(model))
    try:
        rec.family.attach(rec.taps)
        yield rec
    finally:
        rec.taps.remove()
