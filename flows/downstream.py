"""The jobs `attn-audit audit` runs after every shard of a run is committed: evaluation, then report."""

from __future__ import annotations

from pathlib import Path

from flows.audit import DOWNSTREAM_JOBS, JobContext
from flows.progress import shard_progress
from tasks.evaluate.run import evaluate_run
from tasks.report.page import write_report


def evaluate(ctx: JobContext) -> None:
    """Perturbation tests and localisation (where the data has ground truth), into the store; on the run's Ray
    actors when they are up."""
    with shard_progress("evaluating", ctx.run.num_samples, enabled=ctx.progress) as bar:
        evaluate_run(ctx.store, ctx.run.run_id, device=ctx.plan.device, pool=ctx.pool,
                     on_progress=lambda done, _total: bar.update(0, done))


def report(ctx: JobContext) -> dict[str, str]:
    """One static HTML report beside a local store (reports/<run>/index.html)."""
    uri = ctx.store.uri
    base = Path(uri).parent if "://" not in uri else Path("out")
    return {"report": str(write_report(ctx.store, ctx.run.run_id, base / "reports" / ctx.run.run_id))}


def register() -> None:
    for job in (evaluate, report):
        if job not in DOWNSTREAM_JOBS:
            DOWNSTREAM_JOBS.append(job)
