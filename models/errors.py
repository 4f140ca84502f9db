"""Errors the engine raises; each message says what went wrong and what to do."""


class AttnAuditError(Exception):
    """Base class of every error this package raises on purpose."""


class SampleError(AttnAuditError):
    """One sample cannot be explained; the rest of its batch can."""

    def __init__(self, sample_id: str, stage: str, message: str):
        super().__init__(f"sample {sample_id!r} ({stage}): {message}")
        self.sample_id = sample_id
        self.stage = stage
        self.message = message
        self.position: int | None = None  # its place among the samples given to preprocess, when collected


class UnsupportedModelError(AttnAuditError):
    """The model class has no topology adapter."""


class UnsafeCheckpointError(AttnAuditError):
    """The checkpoint is not in safetensors format (pickle files are never loaded)."""


class ModelLoadError(AttnAuditError):
    """The model reference cannot be resolved or loaded."""
