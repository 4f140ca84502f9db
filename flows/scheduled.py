"""The audit as a flow with plain parameters, for Prefect deployments on a schedule (deploy/serve.py,
deploy/prefect.yaml): what `attn-audit audit` does, with the CLI's options as flow parameters.

Each scheduled run plans the audit again: unchanged model files and data are the same run, already complete, so
nothing is recomputed (only the downstream jobs look again); new data or new weights make a new run. The nested
flow run `audit-<run_id>` holds the shard and downstream tasks, as under the CLI.

The audit machinery (torch, Ray) is imported when a flow runs, not with this module: serving the deployments
and loading the flow stay quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prefect import flow

if TYPE_CHECKING:
    from flows.audit import DownstreamJob, RunSummary
    from flows.plan import AuditRequest


def audit_now(request: AuditRequest, downstream: list[DownstreamJob] | None = None) -> RunSummary:
    """Run the audit flow from inside another flow run: no progress bar (nobody watches a worker's terminal);
    downstream jobs: evaluation and report unless others are given."""
    from flows import downstream as jobs
    from flows.audit import run_audit

    jobs.register()
    return run_audit(request, progress=False, downstream=downstream)


@flow(name="scheduled-audit", validate_parameters=True,
      description="Audit a model on a dataset into the store (explain, evaluate, report), as `attn-audit audit`.")
def scheduled_audit(model: str, data: str, store: str = "out/store", methods: list[str] | None = None,
                    limit: int | None = None, target: str = "predicted", batch_size: int | None = None,
                    shard_size: int | None = None, workers: int | None = None, gpus_per_worker: float = 1.0,
                    device: str = "auto", precision: str = "float32", truncate: bool = False,
                    force: bool = False) -> dict:
    """Parameters as the CLI's options: `model` builtin:NAME / a checkpoint folder / a hub id; `data` a data
    reference; `store` a folder or s3:// / gs:// URI reachable from the Ray workers; `methods` default every
    method; `target` predicted / label / a class index; `batch_size` default the CLI's; `gpus_per_worker` GPUs
    per Ray actor on a GPU cluster."""
    import models
    from flows.plan import AuditRequest

    options = {"batch_size": batch_size} if batch_size is not None else {}
    request = AuditRequest(model=model, data=data, methods=methods or models.default_methods(), store=store,
                           target=target, shard_size=shard_size, limit=limit, force=force, workers=workers,
                           gpus_per_worker=gpus_per_worker, device=device, precision=precision, truncate=truncate,
                           **options)
    s = audit_now(request)
    return {"run_id": s.run_id, "status": s.status, "model": s.model_ref, "data": s.data_ref, "samples": s.samples,
            "explained": s.explained, "failed": s.failed, "shards_computed": s.shards_run, "paths": s.paths}
