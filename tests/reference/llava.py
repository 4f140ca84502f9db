"""chefer2021 for ONE token of ONE (image, prompt) sample of a stock LLaVA, as SPEC §1.10 states it.

Its own forward pass over the tokens before the explained one (a lone, unpadded sequence with the image), eager
attention, `.retain_grad()` on every attention map the model returns — the vision tower's, all its layers, and the
language model's — and one `backward()` on that token's logit at the position before it. Then the float64
full-matrix rules of rules.py (Eq. 5, Eq. 6) over each stream with an explicit loop over layers, and the joint
matrix built explicitly: the stream's R times R_0, whose text rows are the identity's and whose image rows are the
tower's R rows of the tokens the stream's image positions hold. Readout: row p − 1, its own entry (R − I) there.
Does not use models/engine.
"""

from __future__ import annotations

import torch

from .causal_lm import self_relevancy, token_backward


def reference_token(model: torch.nn.Module, pixel_values: torch.Tensor, ids: list[int], p: int
                    ) -> tuple[torch.Tensor, torch.Tensor, float, float]:
    """(text row over the non-image positions of 0 … p − 1, image row over the tower's patches (grid order), both
    float64, logit, log probability) for token `ids[p]` given the image and `ids[:p]`."""
    assert 0 < p < len(ids)
    config = model.config
    inputs = {"input_ids": torch.tensor([ids[:p]]), "pixel_values": pixel_values[None]}
    out, logits = token_backward(model, inputs, p, ids[p], lambda o: (*o.image_outputs.attentions, *o.attentions))
    tower, stream = out.image_outputs.attentions, out.attentions
    n_tower = tower[0].shape[-1]
    r_tower, r_stream = self_relevancy(tower, n_tower), self_relevancy(stream, p)
    first_fed = 1 if config.vision_feature_select_strategy == "default" else 0  # "default" drops [CLS]
    image_positions = [j for j in range(p) if ids[j] == config.image_token_id]
    r0 = torch.zeros(p, p + n_tower, dtype=torch.float64)  # columns: stream positions, then tower tokens
    for j in range(p):
        r0[j, j] = 1.0
    for k, j in enumerate(image_positions):
        r0[j, j] = 0.0
        r0[j, p:] = r_tower[first_fed + k]
    row = (r_stream @ r0)[p - 1]
    if ids[p - 1] != config.image_token_id:  # (R − I) at a text readout
        row[p - 1] -= 1.0
    text = [j for j in range(p) if ids[j] != config.image_token_id]
    n_special = n_tower - (config.vision_config.image_size // config.vision_config.patch_size) ** 2  # [CLS]
    logprob = torch.log_softmax(logits.detach().double(), -1)[ids[p]]
    return row[text], row[p + n_special:], float(logits[ids[p]].detach()), float(logprob)
