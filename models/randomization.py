"""Cascading model-parameter randomisation (Adebayo et al. 2018, SPEC.md §5.1) on a copy of a loaded model.

Top-down: the classification head first, then the layers from the last to the first (of every stack of layers,
aligned at the top), then the embeddings; each step keeps the earlier steps randomised. Weights are redrawn from
N(0, initializer_range²), biases set to 0, norm scales to 1 — the checkpoint's own initialisation scheme, seeded.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from attn_audit.models.loaded import LoadedModel
from torch import nn


def _is_stack(module: nn.Module) -> bool:
    """A list of transformer layers: a ModuleList of one layer class that has an attention module."""
    kinds = {type(child) for child in module} if isinstance(module, nn.ModuleList) else set()
    return len(kinds) == 1 and any("attention" in type(sub).__name__.lower() for sub in module[0].modules())


def _is_embedding(module: nn.Module) -> bool:
    return "embedding" in type(module).__name__.lower() and any(True for _ in module.parameters())


def _outermost(root: nn.Module, found) -> list[nn.Module]:
    """The submodules `found` says yes to, none inside another one (nor inside a layer stack)."""
    picked: list[nn.Module] = []

    def walk(module: nn.Module) -> None:
        for child in module.children():
            if found(child):
                picked.append(child)
            elif not _is_stack(child):
                walk(child)

    walk(root)
    return picked


def randomization_steps(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """[(name, modules)] in cascade order: head, layer.L-1, ..., layer.0, embeddings. Every stack of layers is
    randomised from its top: a model of several (CLIP's towers, LXMERT's language / vision / cross layers, an
    encoder and a decoder) has step layer.i take the i-th layer from the top of each, counted as in the deepest."""
    stacks = _outermost(model, _is_stack)
    if not stacks:
        raise ValueError(f"cannot find the layers of {type(model).__name__} (no ModuleList of attention layers)")
    embeddings = _outermost(model, _is_embedding)
    inner = {id(m) for stack in stacks for m in stack.modules()} | {id(m) for e in embeddings for m in e.modules()}
    head = [child for child in model.children()
            if not any(id(m) in inner for m in child.modules()) and any(True for _ in child.parameters())]
    depth = max(len(stack) for stack in stacks)
    steps = [("head", head)] if head else []
    steps += [(f"layer.{i}", [stack[i - depth + len(stack)] for stack in stacks if i - depth + len(stack) >= 0])
              for i in reversed(range(depth))]
    return steps + ([("embeddings", embeddings)] if embeddings else [])


@torch.no_grad()
def randomize_(modules: list[nn.Module], std: float, generator: torch.Generator) -> None:
    for module in modules:
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                if name == "bias":
                    param.zero_()
                elif isinstance(sub, nn.LayerNorm) or "norm" in type(sub).__name__.lower():
                    param.fill_(1.0)
                else:
                    noise = torch.randn(param.shape, generator=generator, dtype=torch.float32) * std
                    param.copy_(noise.to(param.device, param.dtype))


def cascading_randomization(m: LoadedModel, seed: int = 0) -> Iterator[tuple[str, LoadedModel]]:
    """Yield (step name, model randomised down to that step); one copy of `m`, randomised in place step by
    step (`m` itself is untouched)."""
    copied = copy.deepcopy(m)
    std = float(getattr(copied.model.config, "initializer_range", 0.02))
    generator = torch.Generator().manual_seed(seed)
    for name, modules in randomization_steps(copied.model):
        randomize_(modules, std, generator)
        yield name, copied
