"""chefer2021 — Chefer, Gur & Wolf (ICCV 2021), the paper's method (SPEC §1)."""

from models.engine.propagate import chefer_rows
from models.engine.rules import gradient_weighted
from models.methods.registry import Method, masked


class Chefer2021(Method):
    name = "chefer2021"
    description = "gradient-weighted attention propagated through self-, co- and cross-attention (ICCV 2021)"
    needs_gradients = True
    fast_path = True  # row-vector propagation when every event is self-attention

    def attribute(self, capture):
        steps = [(e, masked(capture, e, gradient_weighted(e.attn, e.grad))) for e in capture.events]
        sizes = {m: mask.shape[1] for m, mask in capture.masks.items()}
        return chefer_rows(steps, sizes, capture.readouts, fast_path=self.fast_path)
