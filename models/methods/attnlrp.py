"""attnlrp — AttnLRP (Achtibat et al., ICML 2024) as input × modified gradient (models/lrp/modified_gradient.py):
ε-LRP on linear layers and residual Adds, the softmax linearisation, the uniform rule on both attention matmuls,
σ held constant in LayerNorm, the identity rule on element-wise non-linearities; relevance read at the hidden
states entering each tower's first block, starting from the target logit."""

from attn_audit.models.methods.lrp_family import DTYPE, GRADIENT_FAMILIES, TOLERANCE, LRPMethod


class AttnLRP(LRPMethod):
    name = "attnlrp"
    description = "attention-aware LRP through softmax and attention matmuls, input × modified gradient (ICML 2024)"
    kind = "attnlrp"
    needs = frozenset({"attnlrp"})
    params = {"dtype": DTYPE, "tolerance": TOLERANCE}
    families = GRADIENT_FAMILIES

    def attribute(self, capture):
        return dict(capture.lrp[self.need].relevance)

    def notes(self, capture):
        return self.conservation_notes(capture.lrp[self.need].conservation, "the target score")

