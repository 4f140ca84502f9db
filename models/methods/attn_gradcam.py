"""attn_gradcam — Grad-CAM on the last attention layer (SPEC §2)."""

from attn_audit.models.methods.registry import Method, last_layer_rows


def _gradcam_map(capture, event):
    # Head weight = mean gradient over the valid part of the map, so padding cannot shift it.
    return event.gradcam(capture.masks[event.query][:, :, None] & capture.masks[event.key][:, None, :])


class AttnGradCam(Method):
    name = "attn_gradcam"
    description = "Grad-CAM on the last attention layer: heads weighted by their mean gradient"
    needs = frozenset({"gradcam"})

    def attribute(self, capture):
        return last_layer_rows(capture, _gradcam_map)
