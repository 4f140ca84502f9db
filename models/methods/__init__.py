"""Relevancy methods, one file each; importing this package registers them all."""

from models.methods import attention_sum, attn_gradcam, chefer2021, raw_attention, rollout  # noqa: F401
from models.methods.finalize import finalize_rows
from models.methods.registry import Method, Param, available_methods, get_method, method, method_info

__all__ = ["Method", "Param", "available_methods", "finalize_rows", "get_method", "method", "method_info"]
