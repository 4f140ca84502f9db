"""attention_sum — the user's summary's aggregation: Σ attention over layers and heads (SPEC §2)."""

from attn_audit.models.engine.rules import rownorm
from attn_audit.models.methods.finalize import finalize_rows
from attn_audit.models.methods.registry import Method, masked, read_row


class AttentionSum(Method):
    name = "attention_sum"
    description = "sum of attention over all layers and heads, each map normalised to sum to 1"
    needs = frozenset({"mean"})

    def attribute(self, capture):
        rows = {}
        for m, readout in capture.readouts.items():
            total = None
            for event in capture.events_of(readout.source, m):
                summed = masked(capture, event, event.head_mean() * event.attn.shape[1])
                total = summed if total is None else total + summed
            n = capture.masks[m].shape[1]
            rows[m] = read_row(readout.weights, total) if total is not None else \
                readout.weights.new_zeros(readout.weights.shape[0], n)
        # Normalise what is reported: padding and the readout token's own entry are 0 first.
        return {m: rownorm(row) for m, row in finalize_rows(rows, capture).items()}
