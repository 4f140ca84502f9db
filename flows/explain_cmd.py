"""`attn-audit explain` as a Python call: the `explain` flow (the audit without its downstream jobs).

The run is cut into shards (contiguous ranges of dataset positions); each shard is one atomic commit made
by the Ray actor that computed it, so an interrupted run resumes where it stopped: committed shards are
skipped, the rest are recomputed. See flows.audit and docs/workflow.md.
"""

from __future__ import annotations

from attn_audit.flows.plan import model_fingerprint
from attn_audit.flows.request import build_request
from attn_audit.storage.store import Store

__all__ = ["model_fingerprint", "run_explain"]


def run_explain(model_ref: str, data_ref: str, methods: list, store: str | Store = "out/store", *,
                progress: bool = True, verbose: bool = False, storage_options: dict[str, str] | None = None,
                **options):
    """Explain `data_ref` with `methods` into the store; `options`: any other field of the request
    (flows.request: target, limit, batch_size, shard_size, workers, precision, ...). Returns the run's RunSummary."""
    from attn_audit.flows.audit import run_audit

    if isinstance(store, Store):
        storage_options = storage_options or store.storage_options
        store = store.uri
    request = build_request(model=model_ref, data=data_ref, methods=list(methods), store=str(store), **options)
    return run_audit(request, kind="explain", progress=progress, verbose=verbose, storage_options=storage_options)
