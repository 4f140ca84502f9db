"""Chefer-style LRP relevance propagation (the authors' `relprop`, SPEC_LRP L2.4-L2.5) as a batched explicit
reverse pass over the tensors `record` captured on a stock model.

    with record(model) as rec:
        logits = model(**inputs).logits
    rel = relprop(rec, one_hot_rows, rules="ours")      # "ours": Transformer Attribution; "lrp": the baselines
    rel.streams["image"].attn_cam[-1]                    # (B, heads, n, n) R_A of the last block, after the ½

Per stream, top-down: the head's Linears (identities between) → scatter to the pooled token → the final LayerNorm
(identity) → each block (MLP Add → fc2 → fc1 → clone; attention Add → output projection → A·v split, ½ → q·kᵀ
split, ½ → q / k / v Linears → clone) → the embedding Adds, following their first operand → for images the z^B
rule of the patch convolution, summed over channels (the `full` map; the special tokens' rows dropped).

DeiT with teacher averages two heads, logits = (c + d) / 2 on tokens 0 and 1: the ½ is an identity and the Add
rule of the rule set splits the start between c and d (our choice; the authors' DeiT has one head).

Every step is per sample, so a batch gives the per-sample results, and padded keys get A = 0, so no relevance ever
reaches a padding token or leaves one. Relevance that reaches an input that is exactly 0 is dropped (biases are
ignored by every rule), so "ours" conserves only where no such input is on the path. The pass runs in `dtype`
from the recorded tensors cast up; float32 LRP can be ill-conditioned (SPEC_LRP, issue 15), float64 is the check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from attn_audit.models.lrp.record import BlockRecord, LRPRecord, StreamRecord, attention_probs
from attn_audit.models.lrp.rules import (
    RULE_SETS,
    RuleSet,
    av_split,
    clone,
    patch_conv_zb,
    qk_split,
    safe_divide,
    scatter_token,
)


@dataclass
class StreamRelevance:
    attn_cam: list[torch.Tensor]  # per block, bottom first: (B, heads, n, n) relevance at A after the halving
    embeddings: torch.Tensor  # (B, n, D) at the embeddings' output (the input of block 0)
    tokens: torch.Tensor  # (B, n, D) at the first operand of the embedding Adds: word / [special; patch] embeddings
    pixels: torch.Tensor | None  # (B, H, W) image streams: the z^B map summed over channels (`full` LRP)
    block_totals: torch.Tensor  # (L, B) Σ relevance at each block's input
    context_totals: torch.Tensor  # (L, B) Σ relevance at each attention output projection's input
    head_total: torch.Tensor  # (B,) Σ relevance at the pooled token(s), below the head's Linears
    # (B, n) image streams: `pixels` summed over each patch's pixels, per token (special tokens 0)
    pixel_tokens: torch.Tensor | None = None


@dataclass
class Relevance:
    streams: dict[str, StreamRelevance]


def clip_pair_start(rec: LRPRecord, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """Start relevance of a CLIP pair (image b with text b): the same (B, P) rows at both projection outputs.

    The pair's score is logit_scale · cos(i, t) = logit_scale · Σ_d ĩ_d t̃_d with ĩ, t̃ the unit-normalised
    projections. Each dimension's contribution ĩ_d t̃_d, divided (⊘) by their sum so that each sample's start
    sums to 1 — the counterpart of the classifiers' one-hot e_t, which is not scaled by the logit either
    (SPEC_LRP L2.5). The normalisation is treated as an identity, like LayerNorm, and logit_scale drops out.
    A negative cosine flips the signs of every dimension's share; a zero one gives a zero start.
    """
    image = rec.streams["image"].head[0].linears[0].y.to(dtype)
    text = rec.streams["text"].head[0].linears[0].y.to(dtype)
    contribution = F.normalize(image, dim=-1) * F.normalize(text, dim=-1)
    start = safe_divide(contribution, contribution.sum(-1, keepdim=True))
    return {"image": start, "text": start}


def relprop(rec: LRPRecord, start: torch.Tensor | Mapping[str, torch.Tensor], rules: str = "ours",
            dtype: torch.dtype = torch.float32) -> Relevance:
    """Relevance of every stream given a start, from `start` at the top of its head.

    start: (B, n_outputs) rows at the classifier's output (one-hot e_t, not times the logit), or a mapping stream
        -> rows (CLIP: `clip_pair_start`). A tensor goes to the model's only stream.
    rules: "ours" (layers_ours.py: shared-denominator Linear, rescaled Add) or "lrp" (layers_lrp.py:
        separate-denominator Linear, plain Add).
    """
    if rules not in RULE_SETS:
        raise ValueError(f"rules must be one of {sorted(RULE_SETS)}, got {rules!r}")
    streams = rec.streams
    if not isinstance(start, Mapping):
        if len(streams) != 1:
            raise ValueError(f"this model has streams {sorted(streams)}: give the start relevance per stream")
        start = {next(iter(streams)): start}
    return Relevance({name: _stream(streams[name], rows.to(dtype), RULE_SETS[rules], dtype)
                      for name, rows in start.items()})


def _stream(s: StreamRecord, start: torch.Tensor, rs: RuleSet, dtype: torch.dtype) -> StreamRelevance:
    def c(t):
        return t.to(dtype)

    n = s.blocks[0].q.x.shape[1]
    path_starts = rs.add(*(c(y) for y in s.head_outputs), start) if s.head_outputs else (start,)
    R, head_total = 0, 0
    for path, r in zip(s.head, path_starts, strict=True):
        for linear in path.linears:
            r = rs.linear(c(linear.x), c(linear.weight), r)
        head_total = head_total + r.sum(-1)
        R = R + scatter_token(c(path.picked), path.token, n, r)

    cams, block_totals, context_totals = [], [], []
    for block in reversed(s.blocks):
        R, cam, context_total = _block(block, R, s, rs, dtype)
        cams.insert(0, cam)
        block_totals.insert(0, R.sum((1, 2)))
        context_totals.insert(0, context_total)

    embeddings = R
    for x1, x2 in s.embedding_adds:
        R = rs.add(c(x1), c(x2), R)[0]
    pixels = pixel_tokens = None
    if s.patch is not None:
        p = s.patch
        patches = R[:, p.n_special:].transpose(1, 2).reshape(R.shape[0], -1, *p.grid)
        pixels = patch_conv_zb(c(p.pixels), c(p.weight), patches, p.stride, p.padding).sum(1)
        (gh, gw), (sh, sw), b = p.grid, p.stride, pixels.shape[0]
        per_patch = pixels[:, :gh * sh, :gw * sw].reshape(b, gh, sh, gw, sw).sum((2, 4)).flatten(1)
        pixel_tokens = torch.cat([per_patch.new_zeros(b, p.n_special), per_patch], 1)
    return StreamRelevance(cams, embeddings, R, pixels, torch.stack(block_totals), torch.stack(context_totals),
                           head_total, pixel_tokens)


def _block(b: BlockRecord, R: torch.Tensor, s: StreamRecord, rs: RuleSet, dtype: torch.dtype):
    """Relevance at the block input from the relevance R at its output; also R_A (halved) and Σ R at the context."""
    def c(t):
        return t.to(dtype)

    def heads(t):  # (B, n, H·d) -> (B, H, n, d)
        return t.view(*t.shape[:2], b.heads, -1).transpose(1, 2)

    def merge(t):  # (B, H, n, d) -> (B, n, H·d)
        return t.transpose(1, 2).flatten(2)

    R_mlp, R_res = rs.add(c(b.fc2.y), c(b.residual2), R)
    R_mlp = rs.linear(c(b.fc1.x), c(b.fc1.weight), rs.linear(c(b.fc2.x), c(b.fc2.weight), R_mlp))
    R = clone(c(b.residual2), R_res + R_mlp)

    R_attn, R_res = rs.add(c(b.o.y), c(b.residual1), R)
    R_context = rs.linear(c(b.o.x), c(b.o.weight), R_attn)
    q, k, v = heads(c(b.q.y)), heads(c(b.k.y)), heads(c(b.v.y))
    A = attention_probs(q, k, b.scaling, s.key_mask, s.causal)
    R_A, R_v = (r / 2 for r in av_split(A, v, heads(R_context)))
    R_q, R_k = (r / 2 for r in qk_split(q, k, R_A))
    R_x = sum(rs.linear(c(lin.x), c(lin.weight), merge(r)) for lin, r in ((b.q, R_q), (b.k, R_k), (b.v, R_v)))
    return clone(c(b.residual1), R_res + R_x), R_A, R_context.sum((1, 2))
