"""DETR object detectors: one target per detection (query above the confidence threshold, its class).

Relevance is read over the encoder's image-feature grid: encoder self-attention (Eq. 6), decoder
self-attention over the object queries (Eqs. 6–7) and decoder→encoder cross-attention (Eq. 10), readout
row = the detection's query (SPEC §1.7–1.8).
"""

from __future__ import annotations

import torch
from attn_audit.models.adapters.base import SampleMaps
from attn_audit.models.adapters.checkpoint import pixel_transform
from attn_audit.models.adapters.multi_target import MultiTargetAdapter
from attn_audit.models.adapters.targets import Targets
from attn_audit.models.adapters.token_removal import black_out
from attn_audit.models.adapters.vit import image_batch
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.images import PixelTransform


class DetrAdapter(MultiTargetAdapter):
    family = "detr"
    architectures = ("DetrForObjectDetection",)
    modalities = ("image",)

    def __init__(self, model, transform: PixelTransform | None = None, threshold: float = 0.5, **resources):
        super().__init__(model, **resources)
        channels = getattr(model.config.backbone_config, "num_channels", None) or model.config.num_channels
        self.transform = transform or pixel_transform(model, None, channels)
        self.threshold = threshold

    def gradient_roots(self):
        # DETR has no input embedding: the graph starts at the projected backbone features.
        return [self.model.model.input_projection]

    def gradient_root_parameters(self):
        # The first decoder self-attention depends on the learned object queries only (its input is zero); its
        # gradient is not zero (V is the value projection's bias) and the authors' DETR code uses it.
        return [self.model.model.query_position_embeddings.weight]

    def preprocess(self, samples, errors="raise"):
        return image_batch(self.transform, samples, errors)

    def _forward(self, batch, pixels, **kwargs):
        """The stock forward; the image-feature grid it used goes to batch.meta["grid"]."""
        grid = []
        hook = self.model.model.input_projection.register_forward_hook(lambda _m, _i, out: grid.append(out.shape[-2:]))
        try:
            out = self.model(pixel_values=pixels, **kwargs)
        finally:
            hook.remove()
        batch.meta["grid"] = tuple(grid[0])
        return out

    def run(self, batch):
        out = self._forward(batch, batch["pixel_values"], output_attentions=True)
        batch.meta["boxes"] = out.pred_boxes.detach()
        events = [AttentionEvent("self", "image", "image", layer, a) for layer, a in enumerate(out.encoder_attentions)]
        block = len(events)
        for self_attn, cross in zip(out.decoder_attentions, out.cross_attentions):
            events += [AttentionEvent("self", "query", "query", block, self_attn),
                       AttentionEvent("cross", "query", "image", block + 1, cross)]
            block += 2
        b, n_queries, n_image = out.cross_attentions[0].shape[0], *out.cross_attentions[0].shape[-2:]
        device = out.logits.device
        masks = {"image": torch.ones(b, n_image, dtype=torch.bool, device=device),
                 "query": torch.ones(b, n_queries, dtype=torch.bool, device=device)}
        return out.logits, Capture(events, masks, {})

    def own_targets(self, batch, logits):
        """Queries whose best real class (no-object excluded) has probability > threshold."""
        n_queries, n_scores = logits.shape[1:]
        best, classes = torch.softmax(logits, -1)[..., :-1].max(-1)
        sample, query = (best > self.threshold).nonzero(as_tuple=True)
        cls = classes[sample, query]
        names = self.label_names
        height, width = batch["pixel_values"].shape[-2:]
        scale = torch.tensor([width, height, width, height], device=logits.device)
        boxes = centre_to_corners(batch.meta["boxes"][sample, query]) * scale
        details = [{"query": q, "class": c, "label": names[c] if names else None,
                    "box": [round(v, 2) for v in box], "box_format": "xyxy, model-input pixels"}
                   for q, c, box in zip(query.tolist(), cls.tolist(), boxes.tolist())]
        notes = {i: f"no detections: no query's class probability exceeds the threshold {self.threshold}"
                 for i in range(logits.shape[0]) if not (sample == i).any()}
        readout = Readout.token("query", query, n_queries, len(query), device=logits.device)
        return Targets(sample, query * n_scores + cls, {"image": readout}, query.tolist(),
                       [d["label"] for d in details], cls.tolist(), details, notes)

    def maps(self, row, batch, i):
        return SampleMaps({"image": row["image"].reshape(batch.meta["grid"])})

    # -- perturbation: the pixels under an image-feature cell are blacked out ("zero"); dropping tokens from
    # DETR's encoder would shift the sine position embeddings of the others, so there is no "drop"
    perturbation_modes = ("zero",)

    def _grid(self, batch) -> tuple[int, int]:
        if "grid" not in batch.meta:
            with torch.no_grad():
                self._forward(batch, batch["pixel_values"][:1])
        return batch.meta["grid"]

    def removable_tokens(self, batch, modality="image"):
        height, width = self._grid(batch)
        return torch.ones(batch.size, height * width, dtype=torch.bool, device=batch["pixel_values"].device)

    def perturbed_logits(self, batch, rows, keep, modality="image", mode="zero", positions=None):
        if mode != "zero":
            raise ValueError(f"DETR perturbation mode must be 'zero', got {mode!r}")
        removed = ~keep.view(-1, *self._grid(batch))
        logits = self.model(pixel_values=black_out(batch["pixel_values"][rows], removed, self.transform)).logits
        return logits[torch.arange(len(rows), device=logits.device), positions]


def centre_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """DETR's (centre x, centre y, width, height) in [0, 1] -> (x0, y0, x1, y1)."""
    centre, size = boxes[..., :2], boxes[..., 2:]
    return torch.cat([centre - size / 2, centre + size / 2], -1)
