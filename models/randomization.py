"""Cascading model-parameter randomisation (Adebayo et al. 2018, SPEC.md §5.1) on a copy of a loaded model.

Top-down: the classification head first, then the encoder layers from the last to the first, then the
embeddings; each step keeps the earlier steps randomised. Weights are redrawn from N(0, initializer_range²),
biases set to 0, norm scales to 1 — the checkpoint's own initialisation scheme, seeded.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from attn_audit.models.heads import MeanPoolingClassifier
from attn_audit.models.loaded import LoadedModel
from torch import nn


def _base(model: nn.Module) -> nn.Module:
    return model.encoder if isinstance(model, MeanPoolingClassifier) else model.base_model


def randomization_steps(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """[(name, modules)] in cascade order: head, layer.L-1, ..., layer.0, embeddings."""
    base = _base(model)
    head = [child for child in model.children() if child is not base]
    n_layers = getattr(model.config, "num_hidden_layers", None) or getattr(model.config, "n_layers", None)
    layers = next((mod for mod in base.modules() if isinstance(mod, nn.ModuleList) and len(mod) == n_layers), None)
    if layers is None:
        raise ValueError(f"cannot find the {n_layers} encoder layers of {type(model).__name__}")
    steps = [("head", head)] if any(p.numel() for m in head for p in m.parameters()) else []
    steps += [(f"layer.{i}", [layers[i]]) for i in reversed(range(len(layers)))]
    embeddings = getattr(base, "embeddings", None)
    return steps + ([("embeddings", [embeddings])] if embeddings is not None else [])


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
