"""The relevancy engine: attention events in, relevance rows out (SPEC §1–2)."""

from attn_audit.models.engine.events import AttentionEvent, Capture, Readout
from attn_audit.models.engine.propagate import chefer_rows, propagate_self_row, propagate_state

__all__ = ["AttentionEvent", "Capture", "Readout", "chefer_rows", "propagate_state", "propagate_self_row"]
