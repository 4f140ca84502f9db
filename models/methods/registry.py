"""Methods register by name and declare what they need (inseq-style registry, Captum-style call)."""

from __future__ import annotations

from typing import ClassVar

import torch

from models.engine.events import AttentionEvent, Capture
from models.engine.rules import mask_pairs
from models.errors import AttnAuditError

_REGISTRY: dict[str, type[Method]] = {}


class Method:
    """A relevancy method: `attribute(capture)` -> {reported modality: (B, n) readout row}.

    Rows are raw; the explain driver zeroes padding and the readout token's own entry.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    needs_gradients: ClassVar[bool]

    def attribute(self, capture: Capture) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name in _REGISTRY:
            raise ValueError(f"method {cls.name!r} is registered twice")
        _REGISTRY[cls.name] = cls


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise AttnAuditError(
            f"unknown method {name!r}; available: {', '.join(available_methods())}") from None


def available_methods() -> list[str]:
    return sorted(_REGISTRY)


def method_info() -> list[tuple[str, bool, str]]:
    """(name, needs_gradients, one-line description) for every registered method."""
    return [(n, _REGISTRY[n].needs_gradients, _REGISTRY[n].description) for n in available_methods()]


def masked(capture: Capture, event: AttentionEvent, amap: torch.Tensor) -> torch.Tensor:
    """An event's (B, q, k) map with padding queries and keys zeroed."""
    return mask_pairs(amap, capture.masks[event.query], capture.masks[event.key])


def read_row(weights: torch.Tensor, amap: torch.Tensor) -> torch.Tensor:
    """weights (B, n_q) @ map (B, n_q, n_k) -> (B, n_k)."""
    return (weights.float().unsqueeze(1) @ amap).squeeze(1)


def last_event(capture: Capture, query: str, key: str) -> AttentionEvent | None:
    """The last attention from `query` tokens to `key` tokens (the baselines' 'last layer')."""
    events = capture.events_of(query, key)
    return events[-1] if events else None


def last_layer_rows(capture: Capture, map_of_event) -> dict[str, torch.Tensor]:
    """Rows of a map built from the last layer linking each readout's source to its modality."""
    rows = {}
    for m, readout in capture.readouts.items():
        event = last_event(capture, readout.source, m)
        n = capture.masks[m].shape[1]
        if event is None:
            rows[m] = readout.weights.new_zeros(readout.weights.shape[0], n)
        else:
            rows[m] = read_row(readout.weights, masked(capture, event, map_of_event(capture, event)))
    return rows
