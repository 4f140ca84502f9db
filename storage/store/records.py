"""Plain records the store hands out: a run's description (explanations: storage/explanation.py)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime

from attn_audit.storage.store.provenance import run_key

RELEVANCE_DTYPES = ("float32", "float16")
STATUSES = ("running", "completed", "completed_with_errors", "failed")


@dataclass(frozen=True)
class RunSpec:
    """What defines a run. `config` holds every setting that changes the maps (target policy, limit,
    precision, ...); compute knobs that do not (batch size, device, shard size) stay out of it."""

    model_ref: str
    model_fingerprint: str
    dataset_ref: str
    dataset_fingerprint: str
    methods: tuple[str, ...]
    config: dict = field(default_factory=dict)
    num_samples: int = 0
    shard_size: int = 1024
    relevance_dtype: str = "float32"  # "float16": values rounded to float16 precision (column stays float32)

    def full_config(self) -> dict:
        return {**self.config, "relevance_dtype": self.relevance_dtype}

    @property
    def run_id(self) -> str:
        return run_key(self.model_fingerprint, self.dataset_fingerprint, self.methods, self.full_config())


@dataclass
class RunInfo:
    """One row of `runs` plus what its committed shards add up to."""

    run_id: str
    created_at: datetime
    updated_at: datetime
    model_ref: str
    model_fingerprint: str
    dataset_ref: str
    dataset_fingerprint: str
    methods: list[str]
    config: str
    code_version: str
    status: str
    num_samples: int
    shard_size: int
    shards_committed: int = 0
    samples_done: int = 0
    explained: int = 0
    failed: int = 0
    maps: int = 0

    @property
    def num_shards(self) -> int:
        return math.ceil(self.num_samples / self.shard_size) if self.shard_size else 0

    @property
    def config_dict(self) -> dict:
        return json.loads(self.config)

    @property
    def relevance_dtype(self) -> str:
        return self.config_dict.get("relevance_dtype", "float32")

    def shard_range(self, shard_id: int) -> tuple[int, int]:
        start = shard_id * self.shard_size
        return start, min(start + self.shard_size, self.num_samples)
