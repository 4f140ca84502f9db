"""The LRP family on stock Hugging Face modules (SPEC_LRP): Chefer-style relevance propagation over captured
tensors (Transformer Attribution, partial LRP, full LRP) and modified-gradient rules (AttnLRP, CP-LRP)."""
