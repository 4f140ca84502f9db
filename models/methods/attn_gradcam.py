"""attn_gradcam — Grad-CAM on the last attention layer (SPEC §2)."""

from models.engine.rules import masked_mean
from models.methods.registry import Method, last_layer_rows


def _gradcam_map(capture, event):
    # Head weight = mean gradient over the valid part of the map, so padding cannot shift it.
    valid = capture.masks[event.query][:, :, None] & capture.masks[event.key][:, None, :]
    weights = masked_mean(event.grad.float(), valid)  # (B, H)
    return (weights[:, :, None, None] * event.attn.float()).mean(1).clamp_min(0)


class AttnGradCam(Method):
    name = "attn_gradcam"
    description = "Grad-CAM on the last attention layer: heads weighted by their mean gradient"
    needs_gradients = True

    def attribute(self, capture):
        return last_layer_rows(capture, _gradcam_map)
