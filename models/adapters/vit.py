"""ViT-style image classifiers: [CLS] (+ DeiT's distillation token) followed by a patch grid."""

from __future__ import annotations

import numpy as np
import torch
from attn_audit.models.adapters.base import Adapter, SampleMaps
from attn_audit.models.adapters.token_removal import black_out, drop_patches
from attn_audit.models.batch import Batch, collect
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.errors import SampleError
from attn_audit.models.images import PixelTransform, decode_image


class ViTAdapter(Adapter):
    family = "vit"
    architectures = ("ViTForImageClassification", "DeiTForImageClassification",
                     "DeiTForImageClassificationWithTeacher")
    modalities = ("image",)
    pure_self_attention = True

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

    def maps(self, row, batch, i):
        patches = row["image"][self.n_special:]
        return SampleMaps({"image": patches.reshape(self.grid, self.grid)})

    # -- perturbation: "drop" removes patch tokens after the embeddings; "zero" blacks out their pixels
    perturbation_modes = ("drop", "zero")

    def removable_tokens(self, batch, modality="image"):
        return torch.ones(batch.size, self.grid * self.grid, dtype=torch.bool, device=batch["pixel_values"].device)

    def perturbed_logits(self, batch, rows, keep, modality="image", mode="drop", positions=None):
        pixels = batch["pixel_values"][rows]
        if mode == "zero":
            removed = ~keep.view(-1, self.grid, self.grid)
            return self.model(pixel_values=black_out(pixels, removed, self.transform)).logits
        if mode != "drop":
            raise ValueError(f"ViT perturbation mode must be one of {self.perturbation_modes}, got {mode!r}")
        return drop_patches(self.model.base_model.embeddings, self.n_special, keep,
                            lambda sel: self.model(pixel_values=pixels[sel]).logits)


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

