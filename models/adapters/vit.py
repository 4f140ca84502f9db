"""ViT-style image classifiers: [CLS] (+ DeiT's distillation token) followed by a patch grid."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch

from models.adapters.base import Adapter, SampleMaps
from models.batch import Batch, collect
from models.engine.events import AttentionEvent, Capture, Readout
from models.errors import SampleError
from models.images import PixelTransform, decode_image


class ViTAdapter(Adapter):
    family = "vit"
    architectures = ("ViTForImageClassification", "DeiTForImageClassification",
                     "DeiTForImageClassificationWithTeacher")
    modalities = ("image",)

    def __init__(self, model, transform: PixelTransform | None = None, **resources):
        super().__init__(model, **resources)
        self.transform = transform or PixelTransform.for_checkpoint(model.config)
        # DeiT prepends a distillation token; its teacher variant averages both heads.
        self.n_special = 2 if type(model).__name__.startswith("DeiT") else 1
        self.grid = model.config.image_size // model.config.patch_size

    def preprocess(self, samples, errors="raise"):
        return image_batch(self.transform, samples, errors)

    def run(self, batch):
        out = self.model(pixel_values=batch["pixel_values"], output_attentions=True)
        events = [AttentionEvent("self", "image", "image", layer, a) for layer, a in enumerate(out.attentions)]
        b, n = out.attentions[0].shape[0], out.attentions[0].shape[-1]
        mask = torch.ones(b, n, dtype=torch.bool, device=out.logits.device)
        if type(self.model).__name__ == "DeiTForImageClassificationWithTeacher":
            weights = torch.zeros(b, n, device=mask.device)
            weights[:, :2] = 0.5
            readout = Readout("image", weights)
        else:
            readout = Readout.token("image", 0, n, b, device=mask.device)
        return out.logits, Capture(events, {"image": mask}, {"image": readout})

    def maps(self, rows, batch, i):
        patches = rows["image"][i, self.n_special:]
        return SampleMaps({"image": patches.reshape(self.grid, self.grid)})

    # -- perturbation: "drop" removes patch tokens after the embeddings; "zero" blacks out their pixels
    perturbation_modes = ("drop", "zero")

    def removable_tokens(self, batch, modality="image"):
        return torch.ones(batch.size, self.grid * self.grid, dtype=torch.bool, device=batch["pixel_values"].device)

    def perturbed_logits(self, batch, rows, keep, modality="image", mode="drop"):
        pixels = batch["pixel_values"][rows]
        if mode == "zero":
            return self.model(pixel_values=self._black_out(pixels, ~keep)).logits
        if mode != "drop":
            raise ValueError(f"ViT perturbation mode must be one of {self.perturbation_modes}, got {mode!r}")
        counts = keep.sum(1)
        logits = None
        for k in counts.unique().tolist():  # rows of one step fraction share their kept count: one pass each
            sel = (counts == k).nonzero().squeeze(1)
            patches = keep[sel].nonzero()[:, 1].view(len(sel), k) + self.n_special  # ascending: order kept
            special = torch.arange(self.n_special, device=keep.device).expand(len(sel), -1)
            with _gather_tokens(self.model.base_model.embeddings, torch.cat([special, patches], 1)):
                out = self.model(pixel_values=pixels[sel]).logits
            logits = out.new_empty(len(rows), out.shape[1]) if logits is None else logits
            logits[sel] = out
        return logits

    def _black_out(self, pixels: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
        """Removed patches take the normalised value of black, (0 − mean) / std per channel (the reference
        protocol zeroes the [0, 1] image before normalising)."""
        patch = self.model.config.patch_size
        grid = removed.view(-1, 1, self.grid, self.grid)
        mask = grid.repeat_interleave(patch, 2).repeat_interleave(patch, 3)
        mean, std = (torch.tensor(v, dtype=pixels.dtype, device=pixels.device) for v in
                     (self.transform.mean, self.transform.std))
        black = (-mean / std).view(1, -1, 1, 1)
        return torch.where(mask, black, pixels)


def image_batch(transform: PixelTransform, samples: list[dict], errors: str = "raise") -> Batch:
    """`pixel_values` of the samples' images; a sample without a usable image is a SampleError."""
    def convert(sample, sid):
        if "image" not in sample:
            given = ", ".join(sorted(sample)) or "nothing"
            raise SampleError(sid, "input", f"this image model needs an 'image'; the sample has {given}")
        return transform(decode_image(sample["image"], sid))

    pixels, ids, failures = collect(samples, convert, errors)
    tensor = torch.from_numpy(np.stack(pixels)) if pixels else torch.empty(0)
    return Batch({"pixel_values": tensor}, ids, failures)


@contextmanager
def _gather_tokens(embeddings: torch.nn.Module, index: torch.Tensor):
    """While active, the embedding layer returns only the token positions `index` (R, k) of each row, so the
    stock encoder, final norm and head run on the shortened sequence."""
    def keep(_module, _inputs, out):
        return out.gather(1, index[..., None].expand(-1, -1, out.shape[-1]))

    handle = embeddings.register_forward_hook(keep)
    try:
        yield
    finally:
        handle.remove()
