"""The reporting conventions every method shares (SPEC §1.8–1.9)."""

import torch

from models.engine.events import Capture


def finalize_rows(rows: dict[str, torch.Tensor], capture: Capture) -> dict[str, torch.Tensor]:
    """Padding tokens get 0; the readout token's own entry is set to 0."""
    out = {}
    for m, row in rows.items():
        row = row.float() * capture.masks[m].float()
        readout = capture.readouts[m]
        if readout.self_index is not None and readout.source == m:
            row = row.clone()
            row[torch.arange(row.shape[0], device=row.device), readout.self_index.to(row.device)] = 0.0
        out[m] = row
    return out
