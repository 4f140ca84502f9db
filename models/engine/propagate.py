"""Relevancy propagation (SPEC §1, Eqs. 6–11) over a stream of processed attention maps.

Two paths give the same numbers: the full state R^{sq} for every pair of modalities, which the
bi-modal rules need (their normalisation uses whole R^{ss} matrices), and the row-vector path for
pure self-attention, which carries only the readout row from the top layer down (O(n²) a layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

import torch
from attn_audit.models.engine.events import AttentionEvent, Readout
from attn_audit.models.engine.rules import residual_normalize

# One processed event: the event (for its labels) and its (B, n_query, n_key) map Ā.
Step = tuple[AttentionEvent, torch.Tensor]
State = dict[tuple[str, str], torch.Tensor]


def initial_state(sizes: dict[str, int], batch: int, device: torch.device) -> State:
    """R^{mm} = I for every modality; absent pairs stand for R^{mn} = 0."""
    return {
        (m, m): torch.eye(n, device=device).expand(batch, n, n).clone() for m, n in sizes.items()
    }


def _self_updates(state: State, event: AttentionEvent, abar: torch.Tensor) -> State:
    """Eqs. 6–7: R^{sq} += Ā R^{sq} for every q (s itself included)."""
    s = event.query
    return {(a, q): abar @ r for (a, q), r in state.items() if a == s}


def _cross_updates(state: State, event: AttentionEvent, abar: torch.Tensor) -> State:
    """Eq. 10: R^{sq} += R̄^{ss}ᵀ Ā R̄^{qq};  Eq. 11: R^{ss} += Ā R^{qs} (zero when q never saw s)."""
    s, q = event.query, event.key
    updates = {(s, q): residual_normalize(state[(s, s)]).transpose(-1, -2) @ abar
               @ residual_normalize(state[(q, q)])}
    if (q, s) in state:
        updates[(s, s)] = abar @ state[(q, s)]
    return updates


def propagate_state(steps: Sequence[Step], sizes: dict[str, int], batch: int,
                    device: torch.device | str = "cpu") -> State:
    """Run every rule in model order; events of one block all read the pre-block state."""
    state = initial_state(sizes, batch, torch.device(device))
    for _, block in groupby(steps, key=lambda step: step[0].block):
        pending: list[State] = []
        for event, abar in block:
            rule = _self_updates if event.kind == "self" else _cross_updates
            pending.append(rule(state, event, abar))
        for updates in pending:
            for pair, add in updates.items():
                state[pair] = state[pair] + add if pair in state else add
    return state


def propagate_self_row(weights: torch.Tensor, abars: Sequence[torch.Tensor]) -> torch.Tensor:
    """Readout row of R = Π(I + Ā_l) for pure self-attention: v ← v + v Ā, top layer first."""
    v = weights.float()
    for abar in reversed(abars):
        v = v + (v.unsqueeze(1) @ abar).squeeze(1)
    return v


def chefer_rows(steps: Sequence[Step], sizes: dict[str, int], readouts: dict[str, Readout],
                fast_path: bool = True) -> dict[str, torch.Tensor]:
    """Readout rows `weights @ R^{source, m}` for every reported modality m: (B, n_m)."""
    if fast_path and all(event.kind == "self" for event, _ in steps):
        rows = {}
        for m, readout in readouts.items():
            if readout.source != m:  # no cross-attention: R^{sm} stays 0
                rows[m] = readout.weights.new_zeros(readout.weights.shape[0], sizes[m])
            else:
                rows[m] = propagate_self_row(readout.weights, [a for e, a in steps if e.query == m])
        return rows
    any_weights = next(iter(readouts.values())).weights
    state = propagate_state(steps, sizes, any_weights.shape[0], any_weights.device)
    rows = {}
    for m, readout in readouts.items():
        r = state.get((readout.source, m))
        w = readout.weights.float()
        rows[m] = (w.unsqueeze(1) @ r).squeeze(1) if r is not None else w.new_zeros(w.shape[0], sizes[m])
    return rows
