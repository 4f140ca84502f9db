"""The jobs the `audit` flow runs after every shard of a run is committed — a flow parameter (`Downstream`), not a
registry: evaluation, then (when a baseline run is named) the comparison with it, then the report."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from attn_audit.flows.progress import shard_progress, show_phase
from attn_audit.storage.store import RunInfo, Store
from prefect import task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from attn_audit.flows.plan import RunPlan
    from attn_audit.tasks.workers import WorkerPool

JobName = Literal["evaluate", "compare", "report"]
ORDER: tuple[JobName, ...] = ("evaluate", "compare", "report")  # compare reads evaluate's metrics; report shows both


@dataclass
class JobContext:
    """What a downstream job gets: the store and the finished (all shards committed) run, and the run's Ray
    actors while they are up (None when this invocation computed no shard: a job then works in-process)."""

    store: Store
    run: RunInfo
    plan: RunPlan
    settings: Downstream
    pool: WorkerPool | None = None
    progress: bool = False  # draw progress bars (on a terminal)


class Downstream(BaseModel):
    """Which jobs run after the shards, in their fixed order. `compare_with`: the baseline run the comparison
    measures explanation drift against (the checkpoint watcher's previous checkpoint); needed by "compare"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jobs: tuple[JobName, ...] = ("evaluate", "report")
    compare_with: str | None = Field(None, description="baseline run id of the comparison")
    top_k: float = Field(0.1, gt=0, le=1, description="the comparison's top-k overlap: this fraction of positions")

    @model_validator(mode="after")
    def _baseline(self) -> Downstream:
        if "compare" in self.jobs and not self.compare_with:
            raise ValueError("the compare job needs compare_with (a baseline run id)")
        return self

    def steps(self) -> list[Callable[[JobContext], dict[str, str] | None]]:
        return [JOBS[name] for name in ORDER if name in self.jobs]


EVALUATE_AND_REPORT = Downstream()
NONE = Downstream(jobs=())


def evaluate(ctx: JobContext) -> None:
    """Perturbation tests and localisation (where the data has ground truth), into the store; on the run's Ray
    actors when they are up."""
    from attn_audit.tasks.evaluate.run import evaluate_run

    with ExitStack() as stack:
        bars = []

        def progress(done: int, total: int) -> None:  # the first report gives the total: the sanity check's too
            if not bars:
                bars.append(stack.enter_context(shard_progress("evaluating", total, enabled=ctx.progress)))
            bars[0].update(0, done)

        evaluate_run(ctx.store, ctx.run.run_id, device=ctx.plan.compute.device, pool=ctx.pool, on_progress=progress)


def compare(ctx: JobContext) -> None:
    """The run against `compare_with`; runs that cannot be compared are still a complete audit (a warning)."""
    from attn_audit.tasks.compare import CompareSettings, compare_runs
    from prefect import get_run_logger

    from attn_audit import models

    show_phase(f"comparing with run {ctx.settings.compare_with}…", ctx.progress)
    try:
        compare_runs(ctx.store, baseline=ctx.settings.compare_with, run=ctx.run.run_id,
                     settings=CompareSettings(top_k=ctx.settings.top_k))
    except models.AttnAuditError as err:
        get_run_logger().warning("no comparison with run %s: %s", ctx.settings.compare_with, err)


def report(ctx: JobContext) -> dict[str, str]:
    """One static HTML report beside a local store (reports/<run>/index.html)."""
    from attn_audit.tasks.report.page import write_report

    show_phase("writing the report…", ctx.progress)
    uri = ctx.store.uri
    base = Path(uri).parent if "://" not in uri else Path("out")
    return {"report": str(write_report(ctx.store, ctx.run.run_id, base / "reports" / ctx.run.run_id))}


JOBS = {"evaluate": evaluate, "compare": compare, "report": report}


@task(name="downstream", persist_result=False, cache_policy=NO_CACHE)
def downstream_task(job: Callable[[JobContext], dict[str, str] | None], context: JobContext) -> dict | None:
    """One downstream job (evaluation, report, ...) over the committed run, a Prefect task named after it."""
    return job(context)
