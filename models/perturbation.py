"""Perturbation forward passes (SPEC.md §3): remove a fraction of one modality's tokens in relevance order and
re-run the stock model — every step of every explanation of a batch in a few large passes, no per-sample loop.

    curves = perturbation_curves(m, batch, "image", maps, targets, fractions=[0, .1, .2], mode="drop")
    curves.probability  # (E, directions, steps): softmax probability of each explanation's target

Removal order: `positive` removes the most relevant tokens first, `negative` the least relevant first; equal
relevance is broken by token index (lower first) in both. At fraction p, floor(p · n) of the n removable
tokens are removed (p = 1 removes them all; special tokens such as [CLS] / [SEP] are never removable).
How a token is removed is the adapter's business (`Adapter.perturbed_logits`, `perturbation_modes`). The passes
run the model's SDPA attention where it has one (transformers' default; models are loaded eager for the captures).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from attn_audit.models.batch import Batch
from attn_audit.models.capture import autocast
from attn_audit.models.engine.attention_registry import sdpa
from attn_audit.models.errors import AttnAuditError
from attn_audit.models.loaded import LoadedModel

DIRECTIONS = ("positive", "negative")
# Rows per forward pass when not given. On a CPU, passes beyond ~128 rows of a small ViT run slower per row when
# zeroing (the activations outgrow the caches: 512 rows cost 1.7x the floor, 128 rows 1.16x; bench_perturbation.py).
DEFAULT_MAX_ROWS = {"cpu": 128}
ACCELERATOR_MAX_ROWS = 2048


def default_max_rows(device: torch.device) -> int:
    return DEFAULT_MAX_ROWS.get(torch.device(device).type, ACCELERATOR_MAX_ROWS)


@dataclass
class PerturbationCurves:
    fractions: np.ndarray  # (S,) share of removable tokens removed at each step
    directions: tuple[str, ...]  # (D,)
    removed: np.ndarray  # (E, S) tokens removed at each step
    score: np.ndarray  # (E, D, S) float32: logit of the target
    probability: np.ndarray  # (E, D, S) float32: softmax probability of the target
    prediction: np.ndarray  # (E, D, S) int64: predicted class


def removal_counts(n_removable: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """(E, S): floor(p · n) tokens removed at each fraction (a tolerance keeps 0.3 · 10 at 3)."""
    return torch.floor(fractions[None, :].double() * n_removable[:, None].double() + 1e-9).long()


def removal_ranks(relevance: torch.Tensor, removable: torch.Tensor, direction: str) -> torch.Tensor:
    """(E, L) long: each removable token's place in the removal order (0 = removed first); tokens that are not
    removable rank after all the others. Ties in relevance go to the lower token index."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    key = -relevance if direction == "positive" else relevance
    key = torch.where(removable, torch.nan_to_num(key.double(), nan=0.0), torch.inf)
    order = torch.argsort(key, dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def keep_masks(relevance: torch.Tensor, removable: torch.Tensor, fractions: Sequence[float],
               directions: Sequence[str] = DIRECTIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep (E, D, S, L) bool, removed counts (E, S)): the tokens left at each direction and step."""
    fractions_t = torch.as_tensor(list(fractions), dtype=torch.float64, device=relevance.device)
    counts = removal_counts(removable.sum(1), fractions_t)
    ranks = torch.stack([removal_ranks(relevance, removable, d) for d in directions], 1)  # (E, D, L)
    keep = ranks[:, :, None, :] >= counts[:, None, :, None]
    return keep, counts


def place_maps(maps: Sequence[np.ndarray], removable: torch.Tensor, sample_ids: Sequence[str]) -> torch.Tensor:
    """(E, L) float64 relevance on the adapter's token positions; a map must cover every removable token."""
    out = torch.zeros(len(maps), removable.shape[1], dtype=torch.float64)
    width = removable.shape[1]
    for e, (values, sid) in enumerate(zip(maps, sample_ids)):
        flat = np.asarray(values, dtype=np.float64).ravel()
        if flat.size > width or bool(removable[e, flat.size:].any()):
            raise AttnAuditError(f"sample {sid}: its map has {flat.size} positions, which does not match the "
                                 f"model's input ({int(removable[e].sum())} removable of {width} tokens)")
        out[e, :flat.size] = torch.from_numpy(flat)
    return out.to(removable.device)


def perturbation_curves(m: LoadedModel, batch: Batch, modality: str, maps: Sequence[np.ndarray],
                        targets: Sequence[int], fractions: Sequence[float], *, samples: Sequence[int] | None = None,
                        directions: Sequence[str] = DIRECTIONS, mode: str = "drop", max_rows: int | None = None,
                        positions: Sequence[int] | None = None) -> PerturbationCurves:
    """Target score / probability and prediction of E explanations at every (direction, step).

    `maps[e]`: explanation e's relevance of `modality` (flat order = token order; a text map includes its
    special tokens), for sample `samples[e]` of `batch` (default: e) and class `targets[e]`. Models with many
    targets per sample (MultiTargetAdapter) score class `targets[e]` at query / decoder position `positions[e]`.
    Rows (explanation × direction × step) are sorted by kept length and cut into passes of ≤ `max_rows` (default:
    by device, `default_max_rows`).
    """
    adapter = m.adapter
    if mode not in adapter.perturbation_modes:
        raise AttnAuditError(f"{adapter.family} models support perturbation mode(s) "
                             f"{', '.join(adapter.perturbation_modes) or 'none'}, not {mode!r}")
    batch = batch.to(m.device)
    samples = torch.as_tensor(list(range(len(maps)) if samples is None else samples), dtype=torch.long)
    removable = adapter.removable_tokens(batch, modality)[samples.to(m.device)]
    relevance = place_maps(maps, removable, [batch.sample_ids[i] for i in samples.tolist()])
    keep, counts = keep_masks(relevance, removable, fractions, directions)
    e, d, s, width = keep.shape
    keep = keep.reshape(-1, width)
    row_sample = samples.to(m.device).repeat_interleave(d * s)
    row_target = torch.as_tensor(list(targets), dtype=torch.long, device=m.device).repeat_interleave(d * s)
    row_position = None if positions is None else \
        torch.as_tensor(list(positions), dtype=torch.long, device=m.device).repeat_interleave(d * s)
    order = torch.argsort(keep.sum(1), descending=True, stable=True)  # similar lengths share a pass
    score = torch.empty(len(order), device=m.device)
    prob, pred = torch.empty_like(score), torch.empty(len(order), dtype=torch.long, device=m.device)
    # perturbing before sdpa: what the adapter prepares there (a captioner's generation) runs as when explaining
    with torch.inference_mode(), autocast(m.device, m.precision), adapter.perturbing(batch), sdpa(m.model):
        max_rows = max_rows or default_max_rows(m.device)
        for lo in range(0, len(order), max_rows):
            rows = order[lo:lo + max_rows]
            at = {} if row_position is None else {"positions": row_position[rows]}
            logits = adapter.perturbed_logits(batch, row_sample[rows], keep[rows], modality, mode, **at).float()
            t = row_target[rows, None]
            score[rows] = logits.gather(1, t).squeeze(1)
            prob[rows] = torch.softmax(logits, -1).gather(1, t).squeeze(1)
            pred[rows] = logits.argmax(-1)
    shape = (e, d, s)
    return PerturbationCurves(np.asarray(fractions, dtype=np.float64), tuple(directions), counts.cpu().numpy(),
                              score.view(shape).cpu().numpy(), prob.view(shape).cpu().numpy(),
                              pred.view(shape).cpu().numpy())
