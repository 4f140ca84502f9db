"""attn-audit: dataset-scale relevancy maps (Chefer, Gur & Wolf, ICCV 2021) with baselines, a store and evaluation.

The repository keeps its layers as top-level folders (models/ tasks/ flows/ storage/) and installs them as this one
package, so nothing generic (a user's own `models/`) is shadowed:

    import attn_audit
    m = attn_audit.load("builtin:fashion-vit")
    sample = attn_audit.open_dataset("builtin:fashion-canvas?n=1")[0]
    (e,) = attn_audit.explain(m, m.preprocess([sample]), attn_audit.method("chefer2021", start_layer=-1))
    store = attn_audit.open_store("out/store")            # a store written by `attn-audit audit`

Layers (each imports only those below it): attn_audit.flows (Prefect flows, CLI) → attn_audit.tasks (shards, Ray
actors, evaluation, report) → attn_audit.models (the engine) → attn_audit.storage (datasets, the store).
"""

from importlib import import_module

# name → the module that defines it: imported on first use, so that `import attn_audit.storage` (the store, the
# datasets) never loads torch
_API = {"AttnAuditError": "attn_audit.models", "Explanation": "attn_audit.models", "explain": "attn_audit.models",
        "load": "attn_audit.models", "method": "attn_audit.models", "open_dataset": "attn_audit.storage.datasets",
        "open_store": "attn_audit.storage.store"}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'attn_audit' has no attribute {name!r}")
    return getattr(import_module(_API[name]), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
