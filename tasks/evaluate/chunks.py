"""Units of evaluation work: a committed shard of the run (cut at --limit), a part of the sanity check's first
positions, and the store keys that make each (test, method, chunk) commit happen once."""

from __future__ import annotations

from dataclasses import dataclass

from attn_audit.storage.store import Store


@dataclass(frozen=True)
class Chunk:
    shard_id: int
    start: int  # dataset positions [start, stop)
    stop: int

    def key(self, run_id: str, test: str, method: str, digest: str) -> str:
        return f"{run_id}:evaluate:{test}:{digest}:{method}:{self.start}-{self.stop}"

    @property
    def size(self) -> int:
        return self.stop - self.start


def plan_chunks(store: Store, run_id: str, limit: int | None = None) -> list[Chunk]:
    """The run's committed shards in position order, cut to the first `limit` positions."""
    rows = store.shards(run_id).select(["shard_id", "start", "stop"]).to_pylist()
    chunks = []
    for r in sorted(rows, key=lambda r: r["start"]):
        stop = r["stop"] if limit is None else min(r["stop"], limit)
        if stop > r["start"]:
            chunks.append(Chunk(r["shard_id"], r["start"], stop))
    return chunks


SANITY_UNIT = -1  # the shard_id of the sanity check's units of work (sanity_units)
SANITY_PART = 16  # samples per sanity unit: the check's passes spread over the workers like the chunks


def sanity_units(chunks: list[Chunk], samples: int) -> list[Chunk]:
    """The sanity check's units of work: the first `samples` positions of the run's leading contiguous chunks (a run
    still being explained may have gaps), cut into parts of SANITY_PART positions (the same parts on any number
    of workers, so their store keys do not change)."""
    start = stop = chunks[0].start
    for chunk in chunks:
        if chunk.start != stop:
            break
        stop = chunk.stop
    stop = min(stop, start + samples)
    return [Chunk(SANITY_UNIT, lo, min(lo + SANITY_PART, stop)) for lo in range(start, stop, SANITY_PART)]


def committed_keys(store: Store, table: str, keys: list[str]) -> set[str]:
    """The keys whose `store.append(table, ..., key=...)` has already happened (one snapshot for all)."""
    return store.committed_keys(table, keys)
