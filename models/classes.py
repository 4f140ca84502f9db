"""A checkpoint's class names read from its configuration, without loading weights (for checks before a run)."""

from __future__ import annotations

import json

import transformers

from models.adapters import adapter_class
from models.heads import HEAD_CONFIG
from models.loading import checkpoint_files


def checkpoint_class_names(ref: str) -> list[str] | None:
    """The classes dataset labels are matched against (as `LoadedModel.class_names`): `id2label` of a classifier
    checkpoint, the labels of a pooling head; None for models that predict no single class (detectors,
    generators, dual encoders) and for hub ids (their configuration is not read before loading)."""
    files = checkpoint_files(ref)
    if not files:
        return None
    head = next((f for f in files if f.name == HEAD_CONFIG), None)
    if head is not None:
        return list(json.loads(head.read_text())["labels"])
    folder = next(f for f in files if f.name == "config.json").parent
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    architecture = (config.architectures or [type(config).__name__])[0]
    if not adapter_class(architecture).predicts_class:
        return None
    id2label = getattr(config, "id2label", None) or {}
    return [id2label[k] for k in sorted(id2label)] or None
