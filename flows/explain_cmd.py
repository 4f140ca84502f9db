"""`attn-audit explain` as a Python call: the `explain` flow (the audit without its downstream jobs).

The run is cut into shards (contiguous ranges of dataset positions); each shard is one atomic commit made
by the Ray actor that computed it, so an interrupted run resumes where it stopped: committed shards are
skipped, the rest are recomputed. See flows.audit and docs/workflow.md.
"""

from __future__ import annotations

from flows.plan import AuditRequest, model_fingerprint
from storage.store import Store

__all__ = ["model_fingerprint", "run_explain"]


def run_explain(model_ref: str, data_ref: str, methods: list[str], store: str | Store = "out/store",
                target="predicted", batch_size: int = 32, limit: int | None = None, device: str = "auto",
                precision: str = "float32", truncate: bool = False, progress: bool = True,
                shard_size: int | None = None, relevance_dtype: str = "float32",
                storage_options: dict[str, str] | None = None, *, workers: int | None = None,
                gpus_per_worker: float = 1, force: bool = False, verbose: bool = False,
                label_map: str | dict | None = None, capture: str = "fused"):
    """Explain `data_ref` with `methods` into the store; returns the run's RunSummary."""
    from flows.audit import run_audit

    if isinstance(store, Store):
        storage_options = storage_options or store.storage_options
        store = store.uri
    request = AuditRequest(model=model_ref, data=data_ref, methods=list(methods), store=str(store), target=target,
                           shard_size=shard_size, batch_size=batch_size, limit=limit, force=force, workers=workers,
                           gpus_per_worker=gpus_per_worker, device=device, precision=precision, truncate=truncate,
                           relevance_dtype=relevance_dtype, label_map=label_map, capture=capture,
                           storage_options=storage_options)
    return run_audit(request, kind="explain", progress=progress, verbose=verbose)

