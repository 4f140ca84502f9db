"""rollout — Abnar & Zuidema (2020) attention rollout (SPEC §2).

Per layer Â = rownorm(mean_h A + I) and R^{ss} = Â_L ⋯ Â_1. Between modalities (bi-modal form)
R^{sq} = (R^{ss})ᵀ Ā R^{qq} with Ā the last co-attention from s to q. Only the readout row is
formed, as vector–matrix products: O(n²) a layer.
"""

import torch
from attn_audit.models.engine.rules import eye_like, rownorm
from attn_audit.models.methods.registry import START_LAYER, Method, from_layer, last_event, masked, read_row


def _augmented(capture, event) -> torch.Tensor:
    a = masked(capture, event, event.head_mean())
    return rownorm(a + eye_like(a))


class Rollout(Method):
    name = "rollout"
    description = "attention rollout: product of head-averaged attention plus identity (Abnar & Zuidema 2020)"
    needs = frozenset({"mean"})
    params = {"start_layer": START_LAYER}

    def _row_through_self(self, capture, modality: str, v: torch.Tensor) -> torch.Tensor:
        """v R^{mm}: multiply by Â_L first (the row is read at the top)."""
        for event in reversed(capture.events_of(modality, modality)):
            v = read_row(v, _augmented(capture, event))
        return v

    def attribute(self, capture):
        capture = from_layer(capture, self.config["start_layer"], self.spec)
        rows = {}
        for m, readout in capture.readouts.items():
            s, w = readout.source, readout.weights.float()
            if s == m:
                rows[m] = self._row_through_self(capture, s, w)
                continue
            co = last_event(capture, s, m)
            if co is None:
                rows[m] = w.new_zeros(w.shape[0], capture.masks[m].shape[1])
                continue
            # w (R^{ss})ᵀ = (R^{ss} wᵀ)ᵀ: apply Â_1 first, as a column.
            u = w
            for event in capture.events_of(s, s):
                u = (_augmented(capture, event) @ u.unsqueeze(-1)).squeeze(-1)
            rows[m] = self._row_through_self(capture, m, read_row(u, masked(capture, co, co.head_mean())))
        return rows
