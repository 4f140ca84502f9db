"""Relevancy methods, one file each; importing this package registers them all."""

from attn_audit.models.methods import (  # noqa: F401
    attention_sum,
    attn_gradcam,
    attnlrp,
    chefer2021,
    cp_lrp,
    lrp,
    partial_lrp,
    raw_attention,
    rollout,
    transformer_attribution,
)
from attn_audit.models.methods.finalize import finalize_rows
from attn_audit.models.methods.registry import (
    Method,
    Param,
    available_methods,
    check_family,
    default_methods,
    get_method,
    method,
    method_info,
    methods_for_family,
)

__all__ = ["Method", "Param", "available_methods", "check_family", "default_methods", "finalize_rows", "get_method",
           "method", "method_info", "methods_for_family"]
