"""Which attention function a model runs, switched for a block and restored on exit, exceptions included.

Several passes (the fused capture, the LRP modified backward) run attention through a function of their own:
it is registered in transformers' global `AttentionInterface` under a name while any pass that uses it runs
(threads may overlap: the last one out removes it), with sdpa's masks (`AttentionMaskInterface`; an unknown name
gets no mask at all). Passes that read no attention weights (the perturbation tests) run transformers' own SDPA
kernel where the model has it (`sdpa`): models are loaded eager, which only the captures need.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

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


@contextmanager
def sdpa(model: nn.Module):
    """`model`'s transformers models on SDPA inside, those that support it whole (every transformers model within
    them has SDPA and can switch at run time; others stay as they are, with no warning). Same logits as eager to
    float rounding; 1.7x faster passes of MiniLM-L6 over 300 tokens on one CPU thread."""
    switched = []
    try:
        for owner in attention_models(model):
            if _can_run_sdpa(owner):
                switched.append((owner, getattr(owner.config, "_attn_implementation", None) or "eager"))
                owner.set_attn_implementation("sdpa")
        yield
    finally:
        for owner, previous in reversed(switched):
            owner.set_attn_implementation(previous)


def _can_run_sdpa(model: nn.Module) -> bool:
    from transformers import PreTrainedModel

    return all(m._supports_sdpa and m._can_set_attn_implementation() for m in model.modules()
               if isinstance(m, PreTrainedModel))


def attention_models(model: nn.Module) -> list[nn.Module]:
    """The model itself if it is a transformers model, else the outermost ones inside (a wrapper's encoder)."""
    if hasattr(model, "set_attn_implementation"):
        return [model]
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if hasattr(module, "set_attn_implementation") and not any(name.startswith(f"{n}.") for n, _ in found):
            found.append((name, module))
    return [module for _, module in found]
