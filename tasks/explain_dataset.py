"""Explain a dataset batch by batch: read → preprocess → explain, bad samples recorded, not fatal."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from attn_audit.models import LoadedModel
from attn_audit.storage.datasets import SampleError as ReadError
from attn_audit.tasks.labels import Label, LabelMap, sample_label

from attn_audit import models

TARGET_POLICIES = ("predicted", "label")


@dataclass
class BatchResult:
    explanations: list  # models.Explanation, sample-major, failed ones with .error set
    labels: dict[str, Label] = field(default_factory=dict)  # sample_id -> its label, matched to the model's class
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


def explain_dataset(m: LoadedModel, dataset, methods: Sequence[str], target: str | int = "predicted",
                    batch_size: int = 32, start: int = 0, stop: int | None = None,
                    on_batch_done=None, label_map: LabelMap | None = None) -> Iterator[BatchResult]:
    """Yield one BatchResult per batch of dataset positions [start, stop). `label_map` matches the samples'
    labels to the model's classes (tasks.labels); a sample whose label it cannot match is an error row."""
    stop = len(dataset) if stop is None else min(stop, len(dataset))
    for lo in range(start, stop, batch_size):
        positions = range(lo, min(lo + batch_size, stop))
        samples, labels, read_failures = [], {}, []
        for i in positions:
            try:
                sample = dataset[i]
                label = sample_label(label_map, sample)
            except ReadError as err:
                read_failures.append((err.sample_id, "read", err.message))
                continue
            except models.SampleError as err:
                read_failures.append((err.sample_id, err.stage, err.message))
                continue
            samples.append(sample)
            if label is not None:
                labels[str(sample["id"])] = label
        targets: int | list[int | None] | None = None if target == "predicted" else target
        if target == "label":
            samples, targets = _with_label_targets(samples, labels, read_failures)
        batch = m.preprocess(samples, errors="collect")
        exps = models.explain(m, batch, method=list(methods), target=targets)
        result = BatchResult(exps, labels, read_failures)
        if on_batch_done is not None:
            on_batch_done(len(positions))
        yield result


def _with_label_targets(samples, labels: dict[str, Label], failures):
    """Samples whose label names a model class, with those class indices; the rest become failures."""
    kept, targets = [], []
    for sample in samples:
        sid = str(sample["id"])
        label = labels.get(sid)
        if label is None or label.index is None:
            failures.append((sid, "target", "--target label needs a label the model has a class for; this "
                             "sample has " + ("none" if label is None else f"{label.name!r}")
                             + "; use --target predicted"))
            continue
        kept.append(sample)
        targets.append(label.index)
    return kept, targets
