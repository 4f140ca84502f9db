"""Explain a dataset batch by batch: read → preprocess → explain, bad samples recorded, not fatal."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import models
from models import LoadedModel
from storage.datasets import SampleError as ReadError

TARGET_POLICIES = ("predicted", "label")


@dataclass
class BatchResult:
    explanations: list  # models.Explanation, sample-major, failed ones with .error set
    labels: dict[str, object] = field(default_factory=dict)  # sample_id -> dataset label
    read_failures: list[tuple[str, str, str]] = field(default_factory=list)  # (sample_id, stage, message)

    def failures(self) -> list[tuple[str, str, str]]:
        """Every sample that produced no maps, once per sample."""
        seen, out = set(), list(self.read_failures)
        for exp in self.explanations:
            if exp.error is not None and exp.sample_id not in seen:
                seen.add(exp.sample_id)
                out.append((exp.sample_id, exp.error_stage or "explain", exp.error))
        return out


def parse_target(value: str | int | None) -> str | int:
    """'predicted' (default), 'label' (the dataset's label) or a class index."""
    if value is None:
        return "predicted"
    if isinstance(value, int) or str(value).lstrip("-").isdigit():
        return int(value)
    if value not in TARGET_POLICIES:
        raise models.AttnAuditError(f"--target must be 'predicted', 'label' or a class index, got {value!r}")
    return value


def label_index(m: LoadedModel, sample: dict) -> int:
    """The class index of a sample's label (an index or one of the model's label names)."""
    names = m.label_names or []
    label = sample.get("label")
    if isinstance(label, int) and 0 <= label < m.num_classes:
        return label
    if label in names:
        return names.index(label)
    raise models.SampleError(str(sample.get("id")), "target",
                             f"label {label!r} is not one of the model's classes "
                             f"({', '.join(names) or 'no label names'}); use --target predicted")


def explain_dataset(m: LoadedModel, dataset, methods: Sequence[str], target: str | int = "predicted",
                    batch_size: int = 32, start: int = 0, stop: int | None = None,
                    on_batch_done=None) -> Iterator[BatchResult]:
    """Yield one BatchResult per batch of dataset positions [start, stop)."""
    stop = len(dataset) if stop is None else min(stop, len(dataset))
    for lo in range(start, stop, batch_size):
        positions = range(lo, min(lo + batch_size, stop))
        samples, read_failures = [], []
        for i in positions:
            try:
                samples.append(dataset[i])
            except ReadError as err:
                read_failures.append((err.sample_id, "read", err.message))
        targets: int | list[int] | None = None if target == "predicted" else target
        if target == "label":
            samples, targets = _with_label_targets(m, samples, read_failures)
        batch = m.preprocess(samples, errors="collect")
        if target == "label":  # preprocessing may have dropped samples: keep targets aligned
            by_id = {str(s.get("id")): t for s, t in zip(samples, targets)}
            targets = [by_id[sid] for sid in batch.sample_ids]
        exps = models.explain(m, batch, method=list(methods), target=targets)
        labels = {str(s["id"]): s.get("label") for s in samples if s.get("label") is not None}
        result = BatchResult(exps, labels, read_failures)
        if on_batch_done is not None:
            on_batch_done(len(positions))
        yield result


def _with_label_targets(m, samples, failures):
    """Samples whose label is a model class, with those class indices; the rest become failures."""
    kept, targets = [], []
    for sample in samples:
        try:
            targets.append(label_index(m, sample))
            kept.append(sample)
        except models.SampleError as err:
            failures.append((err.sample_id, err.stage, err.message))
    return kept, targets
