"""partial_lrp — the "partial LRP" baseline of Chefer et al. (SPEC_LRP L3, `last_layer` on the conventional LRP
rules): mean_h of the clamped LRP relevance at the last block's attention probabilities, read at the readout
row. No gradient pass."""

from attn_audit.models.methods.lrp_family import DTYPE, RECORDED_FAMILIES, TOLERANCE, LRPMethod, stream_mask


class PartialLRP(LRPMethod):
    name = "partial_lrp"
    description = "LRP relevance at the last attention map, head-averaged (Voita et al. 2019; CVPR 2021 baseline)"
    kind = "lrp:lrp"
    needs = frozenset({"lrp:lrp"})
    params = {"dtype": DTYPE, "tolerance": TOLERANCE}
    families = RECORDED_FAMILIES

    def attribute(self, capture):
        relevance = capture.lrp[self.need]
        rows = {}
        for m, readout in capture.readouts.items():
            last = stream_mask(capture, m, relevance.streams[m].attn_cam[-1].clamp_min(0).mean(1))
            rows[m] = (readout.weights.to(last.dtype).unsqueeze(1) @ last).squeeze(1)
        return rows
