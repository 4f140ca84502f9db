"""A preprocessed batch: the model's tensors plus what is needed to report per sample."""

from __future__ import annotations

from attn_audit.models.errors import SampleError


class Batch(dict):
    """dict of model input tensors, with the sample ids and per-sample failures beside it.

    Samples that failed preprocessing are not in the tensors; they are listed in `failures`
    (only when preprocess was asked to collect errors instead of raising).
    """

    def __init__(self, tensors: dict, sample_ids: list[str], failures: list[SampleError] | None = None,
                 **meta):
        super().__init__(tensors)
        self.sample_ids = sample_ids
        self.failures = failures or []
        self.meta = meta

    def to(self, device) -> Batch:
        moved = {k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()}
        return Batch(moved, self.sample_ids, self.failures, **self.meta)

    def floats_as(self, dtype) -> Batch:
        """The batch with its floating-point tensors (pixels, region features) in `dtype`."""
        cast = {k: v.to(dtype) if hasattr(v, "is_floating_point") and v.is_floating_point() else v
                for k, v in self.items()}
        return Batch(cast, self.sample_ids, self.failures, **self.meta)

    def given_positions(self) -> list[int] | None:
        """The position of each kept sample among all samples given to preprocess (failed ones included);
        None when a failure does not say where it was."""
        failed = [f.position for f in self.failures]
        if None in failed:
            return None
        failed_set = set(failed)
        return [p for p in range(self.size + len(failed)) if p not in failed_set]

    @property
    def size(self) -> int:
        """Number of samples (len() of a Batch counts its tensors, as for any dict)."""
        return len(self.sample_ids)


def sample_id_of(sample: dict, position: int) -> str:
    """The sample's own id when it has one, else its position in the call."""
    sid = sample.get("id") if isinstance(sample, dict) else None
    return str(sid) if sid is not None else str(position)


def collect(samples: list, convert, errors: str) -> tuple[list, list[str], list[SampleError]]:
    """Apply `convert(sample, sample_id)` to each sample; raise or collect SampleErrors."""
    if errors not in ("raise", "collect"):
        raise ValueError(f"errors must be 'raise' or 'collect', got {errors!r}")
    converted, ids, failures = [], [], []
    for position, sample in enumerate(samples):
        sid = sample_id_of(sample, position)
        try:
            if not isinstance(sample, dict):
                raise SampleError(sid, "input", f"a sample must be a dict, got {type(sample).__name__}")
            converted.append(convert(sample, sid))
            ids.append(sid)
        except SampleError as err:
            if errors == "raise":
                raise
            err.position = position  # where it was in the call: per-sample targets stay aligned (models.explain)
            failures.append(err)
    return converted, ids, failures
