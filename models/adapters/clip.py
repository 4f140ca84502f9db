"""CLIP dual encoder: one (image, text) pair per sample, score = logits_per_image[i, i] (SPEC §1.1).

Each tower is pure self-attention (Eq. 6, no interaction between them): the image map is the vision tower's
[CLS] row over the patch grid, the text map the row of the token the text tower pools (EOT). The pairs of a
batch are independent, so one backward pass over the sum of the diagonal serves them all. The score table
has one column (the pair's similarity): target 0, probability 1; `score` carries the value.

Perturbation tests (SPEC §3, dual encoders) remove one tower's tokens and score the pair against the batch's
candidates of the other tower (`perturbed_logits`): the similarity, and whether the pair still retrieves its partner.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from attn_audit.models.adapters.base import Adapter, SampleMaps
from attn_audit.models.adapters.token_removal import black_out, drop_patches, drop_text_tokens
from attn_audit.models.batch import Batch
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.errors import SampleError
from attn_audit.models.images import PixelTransform, decode_image
from attn_audit.models.lrp.modified_gradient import clip_pair_forward
from attn_audit.models.paired import encode_pairs
from attn_audit.models.text import TextEncoder, model_max_length, removable_text_tokens


class ClipAdapter(Adapter):
    family = "clip"
    architectures = ("CLIPModel",)
    modalities = ("image", "text")
    predicts_class = False
    pure_self_attention = True

    def __init__(self, model, tokenizer=None, truncate: bool = False, max_length: int | None = None,
                 transform: PixelTransform | None = None, **resources):
        super().__init__(model, **resources)
        if tokenizer is None:
            raise ValueError("CLIPModel needs its tokenizer (the checkpoint folder has none)")
        vision = model.config.vision_config
        self.transform = transform or PixelTransform.for_checkpoint(vision)
        self.grid = vision.image_size // vision.patch_size
        self.encoder = TextEncoder(tokenizer, max_length or model_max_length(tokenizer, model.config.text_config),
                                   truncate)
        model.config.num_labels, model.config.id2label = 1, {0: "similarity"}
        self._candidates_of: tuple[Batch, dict] | None = None  # inside `perturbing`: its batch's candidates

    def tensor_meta(self, tensors):
        ids = tensors["input_ids"]
        return self.encoder.token_meta(ids, tensors.get("attention_mask", torch.ones_like(ids)))

    def preprocess(self, samples, errors="raise"):
        def convert(sample, sid):
            if "image" not in sample or "text" not in sample:
                raise SampleError(sid, "input", "CLIP explains (image, text) pairs; the sample has "
                                  f"{', '.join(sorted(sample)) or 'nothing'}")
            return self.transform(decode_image(sample["image"], sid))

        pixels, text = encode_pairs(samples, convert, self.encoder, errors)
        tensors = dict(text) | {"pixel_values": torch.from_numpy(np.stack(pixels)) if pixels else torch.empty(0)}
        return Batch(tensors, text.sample_ids, text.failures, **text.meta)

    def gradient_roots(self) -> list[torch.nn.Module]:
        """Where the graph starts: the text token embeddings (CLIPModel.get_input_embeddings raises); the image
        side starts at the pixels, which `run` makes require grad."""
        return [self.model.text_model.embeddings.token_embedding]

    def eot_index(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The token the text tower pools, by the stock model's own rule."""
        eos = self.model.config.text_config.eos_token_id
        if eos == 2:  # checkpoints from before transformers PR #24773: the highest id is EOT
            return input_ids.argmax(-1)
        return (input_ids == eos).int().argmax(-1)

    def run(self, batch):
        pixels = batch["pixel_values"].clone().requires_grad_(torch.is_grad_enabled())
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=pixels,
                         output_attentions=True)
        events = [AttentionEvent("self", "image", "image", b, a)
                  for b, a in enumerate(out.vision_model_output.attentions)]
        events += [AttentionEvent("self", "text", "text", len(events) + b, a)
                   for b, a in enumerate(out.text_model_output.attentions)]
        text_mask = batch["attention_mask"].bool()
        b, n_image = pixels.shape[0], events[0].attn.shape[-1]
        masks = {"image": torch.ones(b, n_image, dtype=torch.bool, device=text_mask.device), "text": text_mask}
        readouts = {"image": Readout.token("image", 0, n_image, b, device=text_mask.device),
                    "text": Readout.token("text", self.eot_index(batch["input_ids"]), text_mask.shape[1], b,
                                          device=text_mask.device)}
        return out.logits_per_image.diagonal()[:, None], Capture(events, masks, readouts)

    def modified_scores(self, batch, targets, dtype):
        return clip_pair_forward(self.model, **batch.floats_as(dtype))[1]

    def maps(self, row, batch, i):
        n = batch.meta["lengths"][i]
        return SampleMaps({"image": row["image"][1:].reshape(self.grid, self.grid), "text": row["text"][:n]},
                          {"text": batch.meta["tokens"][i]}, {"text": batch.meta["special"][i]})

    # -- perturbation: image patches dropped after the embeddings ([CLS] stays) or blacked out, as for ViT; text
    # tokens dropped, order kept. The other tower is not touched.
    perturbation_modes = ("drop", "zero")

    def removable_tokens(self, batch, modality):
        if modality == "image":
            return torch.ones(batch.size, self.grid * self.grid, dtype=torch.bool, device=batch["pixel_values"].device)
        removable = removable_text_tokens(batch)
        # the pooled token stays even where the tokenizer does not flag it special (the argmax rule finds any EOT)
        removable[torch.arange(batch.size, device=removable.device), self.eot_index(batch["input_ids"])] = False
        return removable

    def perturbed_logits(self, batch, rows, keep, modality, mode, positions=None):
        """(R, B): logit_scale · cosine of pair `rows[r]` with its `modality` side reduced to `keep[r]`, against the
        other side of every pair of `batch` (unperturbed), its own partner in column 0 and the others after it in
        batch order — logits_per_image (image rows) or logits_per_text (text rows) of the stock model on the reduced
        input. Target 0 then scores the pair's similarity, its probability is the softmax over the candidates, and
        prediction 0 says the pair still retrieves its partner. The candidates are the batch's samples: in an
        evaluation, the samples perturbed together (one `batch_size` batch of a chunk)."""
        if modality == "image":
            perturbed = self._perturbed_images(batch["pixel_values"][rows], keep, mode)
        else:
            if mode != "drop":
                raise ValueError(f"CLIP text perturbation mode must be 'drop', got {mode!r}")
            names = ["input_ids", "attention_mask"]
            reduced = drop_text_tokens({n: batch[n][rows] for n in names}, keep,
                                       self.removable_tokens(batch, "text")[rows], names,
                                       self.encoder.tokenizer.pad_token_id)
            perturbed = self._text_features(reduced["input_ids"], reduced["attention_mask"])
        similarity = _unit(perturbed) @ _unit(self._candidates(batch, modality)).T * self.model.logit_scale.exp()
        return similarity.gather(1, _partner_first(rows, batch.size))

    @contextmanager
    def perturbing(self, batch):
        """The candidates of `batch` are encoded once for all the passes inside (one perturbation test)."""
        outer, self._candidates_of = self._candidates_of, (batch, {})
        try:
            yield
        finally:
            self._candidates_of = outer

    def _candidates(self, batch, modality):
        """The unperturbed other side of every pair of `batch`: what the pairs reduced on `modality` are scored
        against."""
        kept = self._candidates_of[1] if self._candidates_of and self._candidates_of[0] is batch else {}
        if modality not in kept:
            kept[modality] = (self._text_features(batch["input_ids"], batch["attention_mask"]) if modality == "image"
                              else self._image_features(batch["pixel_values"]))
        return kept[modality]

    def _perturbed_images(self, pixels, keep, mode):
        if mode == "zero":
            return self._image_features(black_out(pixels, ~keep.view(-1, self.grid, self.grid), self.transform))
        if mode != "drop":
            raise ValueError(f"CLIP image perturbation mode must be one of {self.perturbation_modes}, got {mode!r}")
        return drop_patches(self.model.vision_model.embeddings, 1, keep,
                            lambda sel: self._image_features(pixels[sel]))

    def _image_features(self, pixels):
        return self.model.get_image_features(pixel_values=pixels).pooler_output

    def _text_features(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)  # the stock model's normalisation (no epsilon)


def _partner_first(rows: torch.Tensor, n: int) -> torch.Tensor:
    """(R, n) column order: sample `rows[r]` first, then the other samples in batch order."""
    others = torch.arange(n, device=rows.device)[None, :] != rows[:, None]
    return torch.argsort(others.to(torch.int8), dim=1, stable=True)
