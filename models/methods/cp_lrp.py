"""cp_lrp — CP-LRP (Ali et al., ICML 2022, "XAI for Transformers: Better Explanations through Conservative
Propagation"): the attention probabilities and LayerNorm's σ held constant, Gradient × Input of that graph
(models/lrp/modified_gradient.py); read and noted as attnlrp is."""

from attn_audit.models.methods.attnlrp import AttnLRP


class CPLRP(AttnLRP):
    name = "cp_lrp"
    description = "conservative propagation: attention and LayerNorm scale held constant, input × gradient (ICML 2022)"
    kind = "cp_lrp"
    needs = frozenset({"cp_lrp"})
