"""chefer2021 — Chefer, Gur & Wolf (ICCV 2021), the paper's method (SPEC §1)."""

from attn_audit.models.engine.propagate import chefer_rows
from attn_audit.models.methods.registry import START_LAYER, Method, from_layer, masked


class Chefer2021(Method):
    name = "chefer2021"
    description = "gradient-weighted attention propagated through self-, co- and cross-attention (ICCV 2021)"
    needs = frozenset({"gradient_weighted"})
    params = {"start_layer": START_LAYER}  # the authors' CLIP notebook uses -1
    identity = True
    fast_path = True  # row-vector propagation when every event is self-attention

    def needs_for(self, rows_in_backward):
        return frozenset({self._row_need}) if rows_in_backward and self.fast_path else self.needs

    @property
    def _row_need(self) -> str:
        return f"row:{self.config['start_layer']}"

    def attribute(self, capture):
        capture = from_layer(capture, self.config["start_layer"], self.spec)  # checks start_layer either way
        if self.fast_path and self._row_need in capture.propagated:  # v ← v + v Ā ran in the backward, top first
            done = capture.propagated[self._row_need]
            n = {m: mask.shape[1] for m, mask in capture.masks.items()}
            return {m: done[m] if m in done else r.weights.new_zeros(r.weights.shape[0], n[m])
                    for m, r in capture.readouts.items()}
        steps = [(e, masked(capture, e, e.gradient_weighted())) for e in capture.events]
        sizes = {m: mask.shape[1] for m, mask in capture.masks.items()}
        return chefer_rows(steps, sizes, capture.readouts, fast_path=self.fast_path)
