"""How perturbation tests remove tokens (SPEC §3), shared by the adapters: compact the kept positions of a
sequence (text tokens, regions), keep only some patch tokens after a ViT's embeddings, or black out pixels."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
from attn_audit.models.images import PixelTransform


def compact(kept: torch.Tensor, inputs: dict, names: list[str], mask_name: str) -> dict[str, torch.Tensor]:
    """The kept positions of `names` moved to the front of each row (order kept), with their new mask. At
    least one slot stays: a row with nothing kept sees one masked, zero-valued position."""
    width = max(1, int(kept.sum(1).max()))
    order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)[:, :width]
    new_mask = kept.gather(1, order)
    out = {mask_name: new_mask.long()}
    for name in names:
        value = inputs[name]
        index = order.view(*order.shape, *([1] * (value.dim() - 2))).expand(-1, -1, *value.shape[2:])
        gathered = value.gather(1, index)
        out[name] = gathered * new_mask.view(*new_mask.shape, *([1] * (value.dim() - 2))).to(gathered.dtype)
    return out


def drop_text_tokens(inputs: dict, keep: torch.Tensor, removable: torch.Tensor, names: list[str],
                     pad_id: int | None) -> dict:
    """Text inputs (`input_ids` and the other per-token `names`) with the `removable` tokens outside `keep` gone
    (special tokens and the rest of the real tokens stay), left-aligned, with their new `attention_mask`; the
    freed slots hold the padding id."""
    kept = inputs["attention_mask"].bool() & (keep | ~removable)
    out = compact(kept, inputs, [n for n in names if n != "attention_mask"], "attention_mask")
    out["input_ids"] = out["input_ids"].masked_fill(out["attention_mask"] == 0, pad_id or 0)
    return out


def drop_patches(embeddings: torch.nn.Module, n_special: int, keep: torch.Tensor,
                 forward: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Outputs of `forward(sel)` (rows `sel` of the R rows) while `embeddings` returns only the special tokens
    and the patches `keep` (R, n_patches) of each row, order kept. Rows that keep as many patches share a pass."""
    counts = keep.sum(1)
    out = None
    for k in counts.unique().tolist():
        sel = (counts == k).nonzero().squeeze(1)
        patches = keep[sel].nonzero()[:, 1].view(len(sel), k) + n_special  # ascending: order kept
        special = torch.arange(n_special, device=keep.device).expand(len(sel), -1)
        with _gather_tokens(embeddings, torch.cat([special, patches], 1)):
            part = forward(sel)
        out = part.new_empty(len(keep), *part.shape[1:]) if out is None else out
        out[sel] = part
    return out


def black_out(pixels: torch.Tensor, removed: torch.Tensor, transform: PixelTransform) -> torch.Tensor:
    """`pixels` (R, C, H, W) with the cells `removed` (R, h, w) of a grid over the image set to the normalised
    value of black, (0 − mean) / std per channel (the reference zeroes the [0, 1] image before normalising). A
    cell covers the pixels that nearest-neighbour upsampling gives it: exactly its patch when h divides H."""
    mask = torch.nn.functional.interpolate(removed[:, None].float(), size=pixels.shape[-2:], mode="nearest").bool()
    mean, std = (torch.tensor(v, dtype=pixels.dtype, device=pixels.device) for v in (transform.mean, transform.std))
    return torch.where(mask, (-mean / std).view(1, -1, 1, 1), pixels)


@contextmanager
def _gather_tokens(embeddings: torch.nn.Module, index: torch.Tensor):
    """While active, the embedding layer returns only the token positions `index` (R, k) of each row, so the
    stock encoder and what follows it run on the shortened sequence."""
    def keep(_module, _inputs, out):
        return out.gather(1, index[..., None].expand(-1, -1, out.shape[-1]))

    handle = embeddings.register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()
