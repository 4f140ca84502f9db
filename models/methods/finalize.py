"""The reporting conventions every method shares (SPEC §1.8–1.9)."""

import torch
from attn_audit.models.engine.events import Capture


def finalize_rows(rows: dict[str, torch.Tensor], capture: Capture, identity: bool = False) -> dict[str, torch.Tensor]:
    """Padding tokens get 0; the readout token's own entry is set to 0 — or, for a content readout, reported as
    R − I there: the readout weight (the identity's share) removed when the method's R holds the identity term
    (`identity`: chefer2021, transformer_attribution, whose rows start from the readout row itself)."""
    out = {}
    for m, row in rows.items():
        row = row.float() * capture.masks[m].float()
        readout = capture.readouts[m]
        if readout.self_index is not None and readout.source == m and not (readout.content and not identity):
            row = row.clone()
            at = torch.arange(row.shape[0], device=row.device), readout.self_index.to(row.device)
            row[at] = row[at] - readout.weights.to(row.device)[at] if readout.content else 0.0
        out[m] = row
    return out
