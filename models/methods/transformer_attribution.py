"""transformer_attribution — Chefer, Gur & Wolf (CVPR 2021), "Transformer Interpretability Beyond Attention
Visualization" (SPEC_LRP L3): Ā_b = mean_h((∂y/∂A_b ⊙ R_{A_b})⁺) with R_A the LRP relevance ("ours" rules) at the
attention probabilities, rolled out as Π(I + Ā) without row normalisation from `start_layer` (the paper's ViT runs
use 1, its notebooks 0), read at the readout row as chefer2021 is."""

import torch
from attn_audit.models.errors import AttnAuditError
from attn_audit.models.methods.lrp_family import (
    DTYPE,
    RECORDED_FAMILIES,
    TOLERANCE,
    LRPMethod,
    row_through,
    stream_mask,
)
from attn_audit.models.methods.registry import START_LAYER


class TransformerAttribution(LRPMethod):
    name = "transformer_attribution"
    description = "LRP relevance at the attention maps × their gradient, rolled out (CVPR 2021)"
    kind = "lrp:ours"
    needs = frozenset({"lrp:ours", "attention_gradient"})
    params = {"start_layer": START_LAYER, "dtype": DTYPE, "tolerance": TOLERANCE}
    families = RECORDED_FAMILIES
    identity = True

    def attribute(self, capture):
        relevance = capture.lrp[self.need]
        rows = {}
        for m, readout in capture.readouts.items():
            events = capture.events_of(m, m)
            cams = relevance.streams[m].attn_cam
            first = self.config["start_layer"] if self.config["start_layer"] >= 0 else len(cams) + \
                self.config["start_layer"]
            if not 0 <= first < len(cams):
                raise AttnAuditError(f"method {self.spec}: start_layer={self.config['start_layer']} is outside "
                                     f"the model's {len(cams)} {m} attention layers")
            maps = [stream_mask(capture, m, (e.grad.to(cam.dtype) * cam).clamp_min(0).mean(1))
                    for e, cam in zip(events[first:], cams[first:])]
            rows[m] = row_through(readout.weights, maps)
        return rows

    def notes(self, capture):
        """The "ours" rules conserve: each stream's relevance at its embeddings sums to its start's total, 1."""
        streams = capture.lrp[self.need].streams.values()
        gap = torch.stack([(s.embeddings.sum((1, 2)) - 1).abs() for s in streams]).amax(0)
        return self.conservation_notes(gap, "the start (1)")
