"""Preprocessing of samples that carry a visual input and a text: both are checked per sample, and a sample
that fails either is left out of both (raised or collected, as for one modality)."""

from __future__ import annotations

from collections.abc import Callable

from attn_audit.models.batch import Batch, collect, sample_id_of
from attn_audit.models.text import TextEncoder


def encode_pairs(samples: list, convert_visual: Callable, encoder: TextEncoder, errors: str) -> tuple[list, Batch]:
    """(visual values aligned with the text batch's samples, the text batch with every failure listed)."""
    visuals, ids, failures = collect(samples, convert_visual, errors)
    by_id = dict(zip(ids, visuals))
    # ids made explicit: position-based ids must not shift when samples before them failed
    passed = [{**s, "id": sid} for pos, s in enumerate(samples)
              if isinstance(s, dict) and (sid := sample_id_of(s, pos)) in by_id]
    text = encoder.encode(passed, errors)
    text.failures = failures + text.failures
    return [by_id[sid] for sid in text.sample_ids], text
