"""A dataset's labels as the model's classes, matched by name — never by the dataset's own class order.

A label is resolved to the model's class index as follows:
- a string (a folder name, a `label` cell) through the user's mapping (`--label-map`) first, then by the
  model's class names (`id2label`), case- and whitespace-insensitively;
- an integer is the model's class index, except for datasets that name their classes (built-in data, whose
  integer labels index their `label_names`): those integers stand for that name, matched as above.

`predictions.label` holds the label as given (its name), `predictions.correct` whether its class is the
predicted one. A label that matches no class is refused before any work (`LabelMap.check`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from attn_audit.models.errors import AttnAuditError, SampleError

MAPPING_HINT = ("map dataset labels to the model's classes with --label-map '{\"my label\": \"model class\"}' "
                "(or a JSON file; Python: label_map=...)")


class LabelError(AttnAuditError):
    """A dataset label the model has no class for, or a bad label mapping."""


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


class Label(NamedTuple):
    """A sample's label: its name as given and the model's class index (None: the model predicts no class a
    label names, e.g. a detector; the label is kept, nothing is compared with it)."""

    name: str
    index: int | None


@dataclass(frozen=True)
class LabelMap:
    """Resolves dataset labels to a model's classes (see the module docstring). Small and picklable."""

    classes: tuple[str, ...]  # the model's class names by index
    dataset_names: tuple[str, ...] | None = None  # what integer labels index, when the dataset names its classes
    mapping: dict[str, str | int] = field(default_factory=dict)  # user: dataset label -> class name or index

    def __post_init__(self):
        for given, wanted in self.mapping.items():
            if self._class_index(wanted) is None:
                raise LabelError(f"--label-map maps {given!r} to {wanted!r}, which is not one of the model's "
                                 f"classes ({self.describe_classes()})")

    def resolve(self, label: str | int) -> Label:
        """The class of one label; LabelError when the model has none."""
        if isinstance(label, bool) or not isinstance(label, int | str):
            raise LabelError(f"label {label!r} must be a class name or a class index")
        if isinstance(label, int) and self.dataset_names is not None:
            if not 0 <= label < len(self.dataset_names):
                raise LabelError(f"label {label} is outside the dataset's {len(self.dataset_names)} class names")
            label = self.dataset_names[label]
        name = str(label)
        wanted = self._mapped(name)
        if wanted is None:
            wanted = label
        index = self._class_index(wanted)
        if index is None:
            raise LabelError(f"label {name!r} is not one of the model's classes ({self.describe_classes()}); "
                             f"{MAPPING_HINT}")
        return Label(self.classes[index] if isinstance(label, int) else name, index)

    def check(self, labels: Iterable[str | int]) -> None:
        """Refuse, naming every one of them, the labels the model has no class for."""
        unknown = []
        for label in sorted(set(labels), key=str):
            try:
                self.resolve(label)
            except LabelError:
                unknown.append(label)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:10]) + (f" and {len(unknown) - 10} more" if len(unknown) > 10
                                                                  else "")
            raise LabelError(f"{len(unknown)} dataset label(s) are not classes of the model: {shown}. The model's "
                             f"classes: {self.describe_classes()}; {MAPPING_HINT}")

    def describe_classes(self) -> str:
        shown = ", ".join(f"{i}={name}" for i, name in enumerate(self.classes[:30]))
        return shown + (f" … ({len(self.classes)} in all)" if len(self.classes) > 30 else "")

    def _mapped(self, name: str) -> str | int | None:
        if name in self.mapping:
            return self.mapping[name]
        by_norm = {_norm(k): v for k, v in self.mapping.items()}
        return by_norm.get(_norm(name))

    def _class_index(self, wanted: str | int) -> int | None:
        if isinstance(wanted, int) and not isinstance(wanted, bool):
            return wanted if 0 <= wanted < len(self.classes) else None
        key = _norm(wanted)
        found = [i for i, c in enumerate(self.classes) if _norm(c) == key]
        if len(found) > 1:  # e.g. ImageNet's two "crane"s: a name cannot say which
            indices = ", ".join(map(str, found))
            raise LabelError(f"label {wanted!r} names {len(found)} of the model's classes ({indices}); give the "
                             "class index, or map it with --label-map")
        return found[0] if found else None


def label_map_for(classes: Sequence[str] | None, dataset, mapping: dict | None) -> LabelMap | None:
    """The LabelMap of a model with these classes on `dataset`; None when the model predicts no class a dataset
    label can be compared with (detectors, generators, dual encoders: `classes` None)."""
    if not classes:
        return None
    names = getattr(dataset, "label_names", None)
    return LabelMap(tuple(classes), tuple(names) if names else None, dict(mapping or {}))


def sample_label(label_map: LabelMap | None, sample: dict) -> Label | None:
    """A sample's label (None: unlabelled); SampleError naming the sample when the model has no class for it."""
    label = sample.get("label")
    if label is None:
        return None
    if label_map is None:
        return Label(str(label), None)
    try:
        return label_map.resolve(label)
    except LabelError as err:
        raise SampleError(str(sample.get("id")), "label", str(err)) from None


def parse_label_map(value: str | dict | None) -> dict[str, str | int]:
    """`--label-map`: a JSON object (inline, or the path of a JSON file) of dataset label -> class name or index."""
    if value is None or isinstance(value, dict):
        mapping = dict(value or {})
    else:
        text = value
        path = Path(value).expanduser()
        if not value.lstrip().startswith("{"):
            if not path.is_file():
                raise LabelError(f"--label-map {value!r}: no such file, and not a JSON object")
            text = path.read_text(encoding="utf-8")
        try:
            mapping = json.loads(text)
        except json.JSONDecodeError as err:
            raise LabelError(f"--label-map is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") \
                from None
        if not isinstance(mapping, dict):
            raise LabelError("--label-map must be a JSON object: {\"dataset label\": \"model class\", ...}")
    bad = [v for v in mapping.values() if isinstance(v, bool) or not isinstance(v, str | int)]
    if bad:
        raise LabelError(f"--label-map values must be class names or indices, got {bad[0]!r}")
    return {str(k): v for k, v in mapping.items()}
