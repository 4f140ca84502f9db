"""Shards: contiguous ranges of dataset positions, the unit of work, retry, commit and resumption.

Shard k of a run with shard size S covers positions [k * S, min((k + 1) * S, n)); the same numbering as
`RunInfo.shard_range` in the store, so a shard planned here is the shard the store commits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SHARD_SIZE = 1024  # samples: the largest automatic shard (what one retry or resume may redo)
MIN_SHARD_SIZE = 256  # the smallest automatic shard: each shard costs a commit (~0.1-0.2 s)
SHARDS_PER_WORKER = 4  # automatic size: about this many shards per worker, so no worker idles at the end
MIN_SPLIT_SIZE = 16  # a run too small for MIN_SHARD_SIZE shards on every worker splits into shards of at least this


@dataclass(frozen=True)
class Shard:
    id: int
    start: int  # first dataset position
    stop: int  # one past the last

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        """`shard-0003 [3072:4096)`: the Prefect task run name and what messages call it."""
        return f"shard-{self.id:04d} [{self.start}:{self.stop})"


def plan_shards(num_samples: int, shard_size: int) -> list[Shard]:
    """Every shard of a run over positions [0, num_samples)."""
    if shard_size < 1 or num_samples < 0:
        raise ValueError(f"shard_size must be ≥ 1 and num_samples ≥ 0 (got {shard_size}, {num_samples})")
    return [Shard(k, k * shard_size, min((k + 1) * shard_size, num_samples))
            for k in range(math.ceil(num_samples / shard_size))]


def pending_shards(shards: Iterable[Shard], committed: Iterable[int]) -> list[Shard]:
    """The shards whose commit is not in the store yet, in order."""
    done = set(committed)
    return [s for s in shards if s.id not in done]


def auto_shard_size(num_samples: int, workers: int) -> int:
    """The shard size for a new run when none is given: about SHARDS_PER_WORKER shards per worker (with 5
    shards on 2 workers, one worker would run the last shard alone: a fifth of the run on half the
    machine), between MIN_SHARD_SIZE and MAX_SHARD_SIZE samples; a run too small for one such shard per worker is
    split evenly, one shard per worker, each of at least MIN_SPLIT_SIZE samples (a sample of a long text or an LRP
    method can cost seconds, a commit 0.1-0.2 s)."""
    workers = max(1, workers)
    size = max(MIN_SHARD_SIZE, min(MAX_SHARD_SIZE, math.ceil(num_samples / (SHARDS_PER_WORKER * workers))))
    if num_samples >= size * workers:
        return size
    return max(1, math.ceil(num_samples / max(1, min(workers, num_samples // MIN_SPLIT_SIZE))))


def max_shards(num_samples: int, shard_size: int | None) -> int:
    """How many shards a run can have: exact for a given size; for an automatic one, the most it can be (on any
    number of workers: see auto_shard_size)."""
    if shard_size:
        return math.ceil(num_samples / shard_size)
    return max(math.ceil(num_samples / MIN_SHARD_SIZE), num_samples // MIN_SPLIT_SIZE)
