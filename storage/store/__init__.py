"""The explanation store: Delta Lake tables (runs, shards, predictions, explanations, errors, metrics,
perturbation_curves, comparisons) with provenance, one atomic commit per shard, a read API and SQL through DuckDB.

    store = Store.open("out/store", create=True)          # or "s3://bucket/prefix", storage_options={...}
    run = store.begin_run(RunSpec(...))                    # same model + data + methods + config → same run_id
    store.commit_shard(run.run_id, 0, explanations=..., predictions=..., errors=...)   # False if already there
    store.is_committed("shards", f"{run.run_id}:shard:0")  # True: the key its commits recorded
    store.finish_run(run.run_id)
    store.explanations(run_id=..., method="chefer2021")   # Arrow; .frame(...) for pandas
    store.load_explanations(run.run_id, sample_ids=["a"])  # objects with numpy maps
    store.sql("SELECT method, count(*) FROM explanations GROUP BY method")

See docs/store.md for the layout and the guarantees. Never imports torch.
"""

from attn_audit.storage.store.errors import (
    QueryError,
    SampleNotFoundError,
    SchemaVersionError,
    StoreConflictError,
    StoreDamagedError,
    StoreError,
    StoreLocationError,
    UnknownRunError,
)
from attn_audit.storage.store.layout import SCHEMA_VERSION, TABLES, VIEW_NAMES
from attn_audit.storage.store.provenance import code_version, fingerprint_files, fingerprint_text, run_key
from attn_audit.storage.store.records import RELEVANCE_DTYPES, STATUSES, RunInfo, RunSpec
from attn_audit.storage.store.store import Store, open_store
from attn_audit.storage.store.writable import check_writable

__all__ = ["RELEVANCE_DTYPES", "SCHEMA_VERSION", "STATUSES", "TABLES", "VIEW_NAMES", "QueryError", "RunInfo",
           "RunSpec", "SampleNotFoundError", "SchemaVersionError", "Store", "StoreConflictError", "StoreError",
           "StoreDamagedError", "StoreLocationError", "check_writable",
           "UnknownRunError", "code_version", "fingerprint_files", "fingerprint_text",
           "open_store", "run_key"]
