"""lrp — full LRP to the input with the conventional rules (SPEC_LRP L2.3, `full`): for images the z^B map of the
patch embedding summed over each patch's pixels and channels, for text the relevance at each token's embedding
summed over its dimensions. These rules do not conserve (every Linear about doubles the total), so no note."""

from attn_audit.models.methods.lrp_family import DTYPE, RECORDED_FAMILIES, TOLERANCE, LRPMethod


class LRP(LRPMethod):
    name = "lrp"
    description = "layer-wise relevance propagation to the input, conventional rules (Bach et al. 2015)"
    kind = "lrp:lrp"
    needs = frozenset({"lrp:lrp"})
    params = {"dtype": DTYPE, "tolerance": TOLERANCE}
    families = RECORDED_FAMILIES

    def attribute(self, capture):
        streams = capture.lrp[self.need].streams
        return {m: streams[m].tokens.sum(-1) if streams[m].pixel_tokens is None else streams[m].pixel_tokens
                for m in capture.readouts}
