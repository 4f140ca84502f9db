"""attn-audit's explainability engine: pure PyTorch, no Prefect, Ray or store.

    models.check_checkpoint("path/to/checkpoint")  # cheap: headers and shapes, no weights read
    m = models.load("path/to/checkpoint" | "builtin:NAME")
    inputs = m.preprocess([{"image": img}, {"image": "cat.png"}])
    exps = models.explain(m, inputs, method="chefer2021")  # or a list; models.method("chefer2021", start_layer=-1)
    exps[0].relevance["image"]  # (h, w) patch grid
"""

from attn_audit.models.errors import (
    AttnAuditError,
    ModelLoadError,
    SampleError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)
from attn_audit.models.explain import explain
from attn_audit.models.loaded import LoadedModel
from attn_audit.models.loading import check_checkpoint, checkpoint_files, load, wrap
from attn_audit.models.methods import available_methods, default_methods, method, method_info, methods_for_family
from attn_audit.storage.explanation import Explanation

__all__ = [
    "AttnAuditError", "Explanation", "LoadedModel", "ModelLoadError", "SampleError", "UnsafeCheckpointError",
    "UnsupportedModelError", "available_methods", "check_checkpoint", "checkpoint_files", "default_methods", "explain",
    "load", "method", "method_info", "methods_for_family", "wrap",
]
