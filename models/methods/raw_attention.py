"""raw_attention — the last layer's attention, mean over heads (SPEC §2)."""

from attn_audit.models.methods.registry import Method, last_layer_rows


class RawAttention(Method):
    name = "raw_attention"
    description = "last attention layer (last co-attention for bi-modal), mean over heads"
    needs = frozenset({"mean"})

    def attribute(self, capture):
        return last_layer_rows(capture, lambda _, event: event.head_mean())
