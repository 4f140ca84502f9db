"""`Store.optimize`: compaction of the per-shard files, keeping each run's relevance encoding
(committer.writer_properties)."""

from __future__ import annotations

from attn_audit.storage.store.committer import backoff, writer_properties
from attn_audit.storage.store.errors import StoreError
from attn_audit.storage.store.layout import TABLES
from attn_audit.storage.store.store import Store
from deltalake.exceptions import CommitFailedError


def optimize(store: Store) -> dict[str, dict]:
    """Compact every table and checkpoint its log; returns deltalake's metrics per table."""
    report = {}
    float16_runs = [r["run_id"] for r in store.delta("runs").to_pyarrow_dataset().to_table(
        columns=["run_id", "config"]).to_pylist() if '"relevance_dtype":"float16"' in r["config"]]
    for name in TABLES:
        if name == "explanations" and float16_runs:  # keep each run's dictionary choice
            others = [("run_id", "not in", float16_runs)]
            report[name] = _merge_metrics(
                [store.delta(name).optimize.compact(partition_filters=others,
                                                    writer_properties=writer_properties(name))]
                + [store.delta(name).optimize.compact(partition_filters=[("run_id", "=", r)],
                                                      writer_properties=writer_properties(name, "float16"))
                   for r in float16_runs])
        else:
            report[name] = _retry(lambda n=name: store.delta(n).optimize.compact(
                writer_properties=writer_properties(n)))
        store.delta(name).create_checkpoint()
    return report


def _retry(action, attempts: int = 5):
    """Compaction conflicts with a concurrent rewrite of the same files: try again on a fresh snapshot."""
    for attempt in range(attempts):
        try:
            return action()
        except CommitFailedError:
            if attempt == attempts - 1:
                raise StoreError("optimize kept conflicting with concurrent writers; run it again") from None
            backoff(attempt)


def _merge_metrics(reports: list[dict]) -> dict:
    merged: dict = {}
    for report in reports:
        for key, value in report.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                merged[key] = merged.get(key, 0) + value
    return merged
