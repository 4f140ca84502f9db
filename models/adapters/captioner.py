"""Image captioners (VisionEncoderDecoderModel with a ViT encoder): each generated token over the image
patches and the earlier generated tokens."""

from __future__ import annotations

import torch
from attn_audit.models.adapters.base import SampleMaps
from attn_audit.models.adapters.checkpoint import pixel_transform
from attn_audit.models.adapters.generation import GenerationAdapter
from attn_audit.models.adapters.token_removal import black_out, drop_patches
from attn_audit.models.adapters.vit import image_batch
from attn_audit.models.errors import UnsupportedModelError
from attn_audit.models.images import PixelTransform


class CaptionerAdapter(GenerationAdapter):
    family = "captioner"
    architectures = ("VisionEncoderDecoderModel",)
    modalities = ("image", "text")
    source, target = "image", "text"

    def __init__(self, model, tokenizer=None, transform: PixelTransform | None = None, **resources):
        super().__init__(model, tokenizer=tokenizer, **resources)
        vision = model.config.encoder
        if vision.model_type != "vit":  # the map layout below is ViT's: [CLS], then a square patch grid
            raise UnsupportedModelError(f"VisionEncoderDecoderModel is supported with a ViT encoder, not "
                                        f"{vision.model_type!r}")
        self.transform = transform or pixel_transform(model, vision.image_size, vision.num_channels)
        self.grid = vision.image_size // vision.patch_size

    def preprocess(self, samples, errors="raise"):
        return image_batch(self.transform, samples, errors)

    def encoder_inputs(self, batch):
        return {"pixel_values": batch["pixel_values"]}

    def source_mask(self, batch, n_source):
        return torch.ones(batch.size, n_source, dtype=torch.bool, device=batch["pixel_values"].device)

    def source_maps(self, row, batch, i):
        return SampleMaps({"image": row[1:].reshape(self.grid, self.grid)})  # [CLS] first, then the patches

    # -- perturbation of the image patches: dropped after the ViT encoder's embeddings, or blacked out
    perturbation_modes = ("drop", "zero")

    def removable_source(self, batch):
        return torch.ones(batch.size, self.grid * self.grid, dtype=torch.bool, device=batch["pixel_values"].device)

    def perturbed_encoder(self, batch, rows, keep, mode, forward):
        pixels = batch["pixel_values"][rows]
        if mode == "zero":
            removed = ~keep.view(-1, self.grid, self.grid)
            return forward(torch.arange(len(rows), device=rows.device),
                           pixel_values=black_out(pixels, removed, self.transform))
        if mode != "drop":
            raise ValueError(f"captioner perturbation mode must be one of {self.perturbation_modes}, got {mode!r}")
        return drop_patches(self.model.encoder.embeddings, 1, keep, lambda sel: forward(sel, pixel_values=pixels[sel]))
