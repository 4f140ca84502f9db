"""LLaVA (LlavaForConditionalGeneration): a vision tower whose projected patch features enter a decoder-only language
model's stream as image tokens; one target per generated (or forced) token, as for causal LMs.

Samples `{"image": PIL image / array / bytes / path, "text": prompt}`, with `"target"` (forced decoding) and `"chat"`
as for causal LMs. The prompt names where the image goes with the tokenizer's image placeholder (`<image>`) once;
without it the image goes first (models/adapters/llava_prompts.py). The adapter expands the placeholder to one token
per image feature, so prompts are written as for the checkpoint's processor. Everything else is the causal LM
adapter's (generation, the teacher-forced capture pass, the prompt-token drop), whose passes run on token ids alone:
`_images` hands each pass the image of its rows.

Relevance (SPEC §1.10): one causal self-attention stream, Eq. 6 over it, whose image tokens' rows start as the vision
tower's R^{image,image} rows (its own self-attention, Eq. 6 over its tokens) instead of the identity. As R = R_stream ·
R_0, the image map is the stream's readout row at the image positions carried through the tower's R:
Σ_j r[pos_j] R_tower[token_j, patches]. `attribute` composes the two with the method's own rule on each stream
(chefer2021: Π(I + Ā); rollout: Π Â; the last-layer baselines: each stream's last layer), so every attention method
maps the image the same way. Tower layers above `vision_feature_layer` never reach the features and get no events;
`vision_feature_select_strategy` "default" feeds the stream the patches (CLS dropped), "full" CLS and patches.

Modalities: `image` is the tower's patch grid (h, w); `text` the stream's other positions 0 … p − 1, with the causal
LM's tokens, special flags and readout rule (its own entry (R − I)). A prompt that ends with its image reads the first
token at an image position: that position is no text entry, and its identity term reaches the image map.

Perturbation: text prompt tokens dropped (as causal LMs, image tokens stay); image patches dropped (the patch token
from the tower's sequence and its image token from the stream) or zeroed (blacked-out pixels, as the ViT protocol).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
from attn_audit.models.adapters.base import SampleMaps
from attn_audit.models.adapters.causal_lm import CausalLMAdapter
from attn_audit.models.adapters.checkpoint import pixel_transform
from attn_audit.models.adapters.llava_prompts import ImagePrompts
from attn_audit.models.adapters.token_removal import black_out, drop_patches
from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.errors import SampleError, UnsupportedModelError
from attn_audit.models.images import PixelTransform, decode_image
from attn_audit.models.paired import encode_pairs
from attn_audit.models.text import model_max_length

TOWER_SPECIALS = {"clip_vision_model": 1, "siglip_vision_model": 0}  # tokens before the patch grid ([CLS])


class LlavaAdapter(CausalLMAdapter):
    family = "llava"
    architectures = ("LlavaForConditionalGeneration",)
    modalities = ("image", "text")
    pure_self_attention = False  # the tower's readout rows come from the stream's: composed after the pass
    perturbation_modes = ("drop", "zero")

    def __init__(self, model, tokenizer=None, transform: PixelTransform | None = None, max_length: int | None = None,
                 **resources):
        config, vision = model.config, model.config.vision_config
        super().__init__(model, tokenizer=tokenizer,
                         max_length=max_length or model_max_length(tokenizer, config.text_config), **resources)
        if vision.model_type not in TOWER_SPECIALS:
            raise UnsupportedModelError(f"LLaVA is supported with a {' or '.join(TOWER_SPECIALS)} vision tower, "
                                        f"not {vision.model_type!r}")
        if not isinstance(config.vision_feature_layer, int):
            raise UnsupportedModelError("LLaVA with features of several tower layers (a vision_feature_layer list) is "
                                        "not supported: each image token must be one tower token at one depth")
        self.n_special = TOWER_SPECIALS[vision.model_type]
        # the first tower token the stream gets: "default" drops [CLS], "full" keeps it
        self.first_fed = 1 if config.vision_feature_select_strategy == "default" else 0
        if self.first_fed > self.n_special:
            raise UnsupportedModelError(f"vision_feature_select_strategy 'default' drops a [CLS] token, which a "
                                        f"{vision.model_type} tower does not have")
        self.grid = vision.image_size // vision.patch_size
        self.n_tower = self.n_special + self.grid ** 2
        self.depth = config.vision_feature_layer % (vision.num_hidden_layers + 1)  # tower layers below the features
        self.image_id = config.image_token_id
        self.transform = transform or pixel_transform(model, vision.image_size, vision.num_channels)
        p = self.prompts
        self.prompts = ImagePrompts(tokenizer, p.context, p.max_new_tokens, p.pad_id, p.truncate, self.image_id,
                                    self.n_tower - self.first_fed)
        generation = model.generation_config  # a generated placeholder would be read as an image token
        generation.suppress_tokens = sorted({*(generation.suppress_tokens or ()), self.image_id})

    @property
    def tower(self) -> torch.nn.Module:
        return self.model.model.vision_tower

    def preprocess(self, samples, errors="raise"):
        def convert(sample, sid):
            if "image" not in sample:
                given = ", ".join(sorted(sample)) or "nothing"
                raise SampleError(sid, "input", f"a vision–language model needs an 'image' and a 'text' prompt; the "
                                  f"sample has {given}")
            return self.transform(decode_image(sample["image"], sid))

        pixels, batch = encode_pairs(samples, convert, self.prompts, errors)
        batch["pixel_values"] = torch.from_numpy(np.stack(pixels)) if pixels else torch.empty(0)
        return batch

    def _complete(self, batch):
        free = [i for i, c in enumerate(batch.meta["continuations"]) if c is None]  # the prompts generation completes
        with _images(self.model, pixel_values=batch["pixel_values"][free]):
            return super()._complete(batch)

    def gradient_roots(self):
        return [self.model.get_input_embeddings(), self.tower.get_input_embeddings()]

    def run(self, batch):
        self.sequences(batch)  # generation first: its passes get their own rows' pixels, not this pass's tower
        tower = self.model.model.get_image_features(pixel_values=batch["pixel_values"], output_attentions=True,
                                                    return_dict=True)
        with _images(self.model, mm_encoder_outputs={"image": tower}):
            logits, stream = super().run(batch)
        events = [AttentionEvent("self", "image", "image", layer, a)
                  for layer, a in enumerate(tower.attentions[:self.depth])]
        events += [replace(e, block=self.depth + e.block) for e in stream.events]
        image = torch.ones(batch.size, self.n_tower, dtype=torch.bool, device=logits.device)
        return logits, Capture(events, stream.masks | {"image": image}, {})

    def own_targets(self, batch, logits):
        targets = super().own_targets(batch, logits)
        # the image map is read from the same stream row (its image columns, through the tower: `attribute`)
        targets.readouts["image"] = Readout("text", targets.readouts["text"].weights)
        return targets

    def attribute(self, method, capture, batch, targets):
        """The stream's rows by `method`, then the tower's, whose readout weights are the stream rows at the image
        positions (the image tokens' rows of R start as the tower's)."""
        stream = method.attribute(_one_stream(capture, "text"))["text"]  # (T, W − 1) over the padded columns
        at_image = self.sequences(batch)["ids"][targets.sample, :stream.shape[1]] == self.image_id
        fed = stream.new_zeros(len(targets), self.n_tower)
        fed[:, self.first_fed:] = stream[at_image].view(len(targets), self.n_tower - self.first_fed)
        tower = method.attribute(_one_stream(capture, "image", Readout("image", fed)))["image"]
        return {"text": stream, "image": tower}

    def target_maps(self, rows, batch, targets, t):
        stream = super().target_maps(rows, batch, targets, t)  # positions 0 … p − 1, image tokens included
        i, p = int(targets.sample[t]), targets.details[t]["position"]
        ids = batch.meta["prompts"][i] + self.sequences(batch)["continuations"][i]
        text = np.array([token != self.image_id for token in ids[:p]])
        return SampleMaps({"text": stream.relevance["text"][text],
                           "image": rows["image"][t][self.n_special:].reshape(self.grid, self.grid)},
                          {"text": [tok for tok, keep in zip(stream.tokens["text"], text) if keep]},
                          {"text": stream.special["text"][text]})

    # -- perturbation: the causal LM's drop over the stream, with the (reduced) image beside it
    def _layout(self, batch) -> dict[str, torch.Tensor]:
        """Unpadded stream positions of each sample's image tokens (B, n_image) and text tokens (B, L), the latter
        padded with the width W (a column past the stream)."""
        if "layout" not in batch.meta:
            seq = self.sequences(batch)
            width = seq["ids"].shape[1]
            full = [p + c for p, c in zip(batch.meta["prompts"], seq["continuations"])]
            image = [[j for j, token in enumerate(f) if token == self.image_id] for f in full]
            text = [[j for j, token in enumerate(f) if token != self.image_id] for f in full]
            longest = max(len(x) for x in text)
            device = seq["ids"].device
            batch.meta["layout"] = {"image": torch.tensor(image, device=device).view(len(full), -1),
                                    "text": torch.tensor([x + [width] * (longest - len(x)) for x in text],
                                                         device=device)}
        return batch.meta["layout"]

    def removable_tokens(self, batch, modality=None):
        """bool over the map positions of `modality`: `text` its prompt tokens that are not special, `image` every
        patch; None: over the stream's positions, as the causal LM's drop reads them (text and image tokens)."""
        stream = super().removable_tokens(batch)
        if modality is None:
            return stream.scatter(1, self._layout(batch)["image"], True)
        if modality == "text":
            text = self._layout(batch)["text"]
            return torch.nn.functional.pad(stream, (0, 1)).gather(1, text)
        _require_modality(modality)
        return torch.ones(batch.size, self.grid ** 2, dtype=torch.bool, device=stream.device)

    def perturbed_logits(self, batch, rows, keep, modality="text", mode="drop", positions=None):
        """Row r: sample rows[r] with only the tokens `keep[r]` of `modality` left, scored at its target's position
        (the causal LM's drop over the stream: text tokens dropped, or the dropped patches' image tokens)."""
        _require_modality(modality)
        if mode not in (("drop",) if modality == "text" else self.perturbation_modes):
            raise ValueError(f"LLaVA perturbs text by 'drop' and images by 'drop' or 'zero', not {modality} by "
                             f"{mode!r}")
        pixels = batch["pixel_values"][rows]
        width = self.sequences(batch)["ids"].shape[1]
        stream = torch.ones(len(rows), width + 1, dtype=torch.bool, device=keep.device)  # + the padding column
        if modality == "text":
            stream.scatter_(1, self._layout(batch)["text"][rows], keep)
            return self._stream_logits(batch, rows, stream[:, :width], positions, pixels)
        if mode == "zero":
            removed = ~keep.view(-1, self.grid, self.grid)
            return self._stream_logits(batch, rows, stream[:, :width], positions,
                                       black_out(pixels, removed, self.transform))
        patch_tokens = self._layout(batch)["image"][rows][:, self.n_special - self.first_fed:]  # patch j's stream token
        stream.scatter_(1, patch_tokens, keep)
        return drop_patches(self.tower.embeddings, self.n_special, keep, lambda sel: self._stream_logits(
            batch, rows[sel], stream[sel, :width], positions[sel], pixels[sel]))

    def _stream_logits(self, batch, rows, keep, positions, pixels):
        with _images(self.model, pixel_values=pixels):
            return super().perturbed_logits(batch, rows, keep, "text", "drop", positions)


def _require_modality(modality: str) -> None:
    if modality not in LlavaAdapter.modalities:
        raise UnsupportedModelError(f"LLaVA perturbation tests remove 'text' or 'image' tokens, not {modality!r}")


def _one_stream(capture: Capture, modality: str, readout: Readout | None = None) -> Capture:
    """The capture of one stream (its events and mask) with one readout: what a method reads from it alone."""
    return Capture(capture.events_of(modality, modality), {modality: capture.masks[modality]},
                   {modality: readout or capture.readouts[modality]})


@contextmanager
def _images(model: torch.nn.Module, **image_inputs):
    """While active, a forward of `model` on token ids that hold image placeholders, without an image of its own,
    gets `image_inputs` (the rows' pixel values, or the tower output a pass computed already): the causal LM
    adapter's passes run on token ids alone. Generation gets it at its first step, the only one with placeholders."""
    image_id = model.config.image_token_id

    def add(_module, args, kwargs):
        ids = kwargs.get("input_ids")
        given = kwargs.get("pixel_values") is not None or (kwargs.get("mm_encoder_outputs") or {}).get("image")
        if given or ids is None or not bool((ids == image_id).any()):
            return None
        kwargs.pop("mm_encoder_outputs", None)  # generation passes an empty one, which excludes pixel values
        return args, kwargs | image_inputs

    handle = model.register_forward_pre_hook(add, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
