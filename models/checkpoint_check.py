"""Does a checkpoint's weights fit its architecture? Cheap checks on the files (safetensors headers only, the
model built on the meta device) and on a loaded model (every weight finite).

Transformers' `from_pretrained` fills missing weights with random values and only logs a report, so a
checkpoint without its classifier would explain a random head; attn-audit refuses instead, naming the tensors.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from attn_audit.models.errors import ModelLoadError

WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
SHOWN = 3  # tensor names shown in a message; the rest are counted

Shapes = dict[str, tuple[int, ...]]


def _some(names) -> str:
    names = sorted(names)
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _dims(shape) -> str:
    return "×".join(map(str, shape)) or "scalar"


def safetensors_shapes(path: Path) -> Shapes:
    """The tensors a safetensors file declares, {name: shape}, after checking that the file is whole: 8 bytes
    of header length, the JSON header, then exactly the bytes the header's offsets cover."""
    def damaged(why: str) -> ModelLoadError:
        return ModelLoadError(f"{path} is not a whole safetensors file ({why}); copy or save the checkpoint again")

    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little") if size >= 8 else None
        if length is None or length > size - 8:
            raise damaged(f"its header is cut off: {size:,} bytes")
        try:
            header = json.loads(f.read(length))
            header.pop("__metadata__", None)
            shapes = {name: tuple(t["shape"]) for name, t in header.items()}
            end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise damaged("its header is not valid safetensors JSON") from None
    if 8 + length + end != size:
        raise damaged(f"its header describes {8 + length + end:,} bytes, the file has {size:,}")
    return shapes


def stored_shapes(folder: Path) -> Shapes:
    """What `from_pretrained` reads from a folder: model.safetensors, or the shards its index names. Every
    *.safetensors file of the folder is checked to be whole (they are all part of the model's fingerprint)."""
    whole = {path.name: safetensors_shapes(path) for path in sorted(folder.glob("*.safetensors"))}
    index = folder / WEIGHTS_INDEX
    try:
        files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else None
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ModelLoadError(f"{index} is not a safetensors index (no weight_map); save the checkpoint again") from None
    absent = [name for name in files or [WEIGHTS_FILE] if name not in whole]
    if absent:
        named_by = f" (named by {WEIGHTS_INDEX})" if files else ""
        raise ModelLoadError(f"{folder} lacks {', '.join(absent)}{named_by}; copy or save the checkpoint again")
    return {name: shape for file in files or [WEIGHTS_FILE] for name, shape in whole[file].items()}


def compare(expected: Shapes, stored: Shapes) -> tuple[set[str], set[str], list[tuple[str, tuple, tuple]]]:
    """(missing, unexpected, [(name, stored shape, expected shape)]) between a model's and a file's tensors."""
    shared = sorted(expected.keys() & stored.keys())
    mismatched = [(k, stored[k], expected[k]) for k in shared if stored[k] != expected[k]]
    return set(expected) - set(stored), set(stored) - set(expected), mismatched


def refuse_mismatch(where: str, against: str, missing, unexpected, mismatched, strict: bool = True,
                    config: str = "config.json") -> None:
    """Raise one line naming the tensors of `where` that do not fit `against`, the model that `config`
    describes (`mismatched`: (name, stored shape, expected shape)). Missing and unexpected tensors only warn
    when not `strict`; wrong shapes always raise. Names are the model's (transformers renames legacy ones)."""
    if mismatched:
        shown = "; ".join(f"{name} is {_dims(got)} in the file, {_dims(want)} in the model"
                          for name, got, want in mismatched[:SHOWN])
        more = f" (and {len(mismatched) - SHOWN} more)" if len(mismatched) > SHOWN else ""
        raise ModelLoadError(f"{where}: tensors have the wrong shape for {against}: {shown}{more}; do these "
                             f"weights belong to {config}?")
    parts = ([f"{len(missing)} tensor(s) missing ({_some(missing)}: they would be random)"] if missing else []) + \
            ([f"{len(unexpected)} unexpected ({_some(unexpected)})"] if unexpected else [])
    if not parts:
        return
    message = f"{where} does not fit {against}: {'; '.join(parts)}"
    if not strict:
        warnings.warn(message, stacklevel=3)
        return
    raise ModelLoadError(f"{message}. Do these weights belong to {config}? (models.load(..., strict=False) loads "
                         "them anyway)")


def check_against_architecture(folder: Path, model_cls, config, strict: bool = True) -> None:
    """The folder's tensors against those `model_cls(config)` expects, without reading any data: the model is
    built on the meta device and the checkpoint's names go through transformers' own renaming rules (legacy
    names, a base model's prefix); tied and ignorable weights count as `from_pretrained` counts them."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key
    from transformers.utils.loading_report import LoadStateDictInfo

    with torch.device("meta"):
        model = model_cls(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    # renamings only: no supported architecture has weight converters (tensors fused or split on load)
    renamings = [t for t in get_model_conversion_mapping(model) if isinstance(t, WeightRenaming)]
    stored = {rename_source_key(name, renamings, [], model.base_model_prefix, expected)[0]: shape
              for name, shape in stored_shapes(folder).items()}
    missing, unexpected, mismatched = compare(expected, stored)
    info = LoadStateDictInfo(missing_keys=missing - set(model.all_tied_weights_keys), unexpected_keys=unexpected,
                             mismatched_keys=set(), error_msgs=[], conversion_errors={}, skipped_pp_keys=set())
    model._adjust_missing_and_unexpected_keys(info)  # e.g. an old checkpoint's position_ids buffer
    refuse_mismatch(str(folder), model_cls.__name__, info.missing_keys, info.unexpected_keys, mismatched, strict)


def refuse_loading_info(where: str, model, info: dict, strict: bool = True) -> None:
    """What `from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)` reports, refused."""
    mismatched = sorted((name, tuple(got), tuple(want)) for name, got, want in info["mismatched_keys"])
    refuse_mismatch(where, type(model).__name__, info["missing_keys"], info["unexpected_keys"], mismatched, strict)


def check_finite(model: torch.nn.Module, where: str) -> None:
    """Refuse weights holding NaN or inf (a damaged file or a diverged training), naming the tensors."""
    bad = [name for name, t in model.state_dict().items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise ModelLoadError(f"{where}: {len(bad)} weight tensor(s) hold NaN or inf ({_some(bad)}); the checkpoint "
                             "is damaged or its training diverged: use another checkpoint")
