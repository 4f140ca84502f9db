"""Our own attention functions in transformers' global `AttentionInterface`, selected on one model for a block.

Several passes (the fused capture, the LRP modified backward) run attention through a function of their own:
it is registered under a name while any pass that uses it runs (threads may overlap: the last one out removes
it), with sdpa's masks (`AttentionMaskInterface`; an unknown name gets no mask at all), and the model's previous
implementation is restored on exit, exceptions included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch

_users: dict[str, int] = {}
_users_lock = threading.Lock()


@contextmanager
def registered(name: str, function: Callable):
    """`function` in transformers' registry under `name` while any caller is inside."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    with _users_lock:
        if _users.get(name, 0) == 0:
            AttentionInterface.register(name, function)
            AttentionMaskInterface.register(name, sdpa_mask)
        _users[name] = _users.get(name, 0) + 1
    try:
        yield
    finally:
        with _users_lock:
            _users[name] -= 1
            if _users[name] == 0:
                del _users[name]
                AttentionInterface._global_mapping.pop(name, None)
                AttentionMaskInterface._global_mapping.pop(name, None)


@contextmanager
def attention_function(model: torch.nn.Module, name: str, function: Callable):
    """Run `model`'s attention through `function` inside; its previous implementation is restored on exit."""
    previous = getattr(model.config, "_attn_implementation", None) or "eager"
    with registered(name, function):
        try:
            model.set_attn_implementation(name)
            yield
        finally:
            model.set_attn_implementation(previous)
