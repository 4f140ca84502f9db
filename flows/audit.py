"""The `audit` and `explain` flows: plan shards → one Prefect task per shard on a pool of Ray actors (each
actor explains its shard and commits it to the store) → downstream jobs (audit only) → finish the run →
summary (terminal table, Prefect artifacts).

    summary = run_audit(AuditRequest(model="builtin:fashion-vit", data="builtin:fashion-canvas",
                                     methods=["chefer2021", "rollout"], store="out/store"))

`run_audit` is the entry point (the CLI's `audit` and `explain` call it): it checks the request before
anything starts (flows.plan), starts or attaches Ray when shards are pending (flows.ray_cluster), uses
Prefect's temporary server or PREFECT_API_URL (flows.prefect_settings), and calls the flow. See
docs/workflow.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner

import models
from flows.plan import AuditRequest, RunPlan, plan_run
from flows.prefect_settings import prefect_session
from flows.progress import shard_progress
from flows.ray_cluster import ray_session
from storage.store import RunInfo, Store, StoreError
from tasks.actors import (
    ActorPool,
    ExplainerConfig,
    Placement,
    error_line,
    node_resources,
    plan_placement,
    worker_bytes,
)
from tasks.explain_shard import ShardJob, ShardResult
from tasks.shard_task import RETRIES, downstream_task, explain_shard_task, is_transient
from tasks.shards import Shard, auto_shard_size, pending_shards, plan_shards

MAX_ARTIFACT_ROWS = 500


@dataclass
class JobContext:
    """What a downstream job gets: the store and the finished (all shards committed) run, and the run's Ray
    actors while they are up (None when this invocation computed no shard: a job then works in-process)."""

    store: Store
    run: RunInfo
    plan: RunPlan
    pool: ActorPool | None = None
    progress: bool = False  # draw progress bars (on a terminal)


DownstreamJob = Callable[[JobContext], "dict[str, str] | None"]  # returns paths to show, e.g. {"report": ...}

# The jobs `audit` runs after every shard is committed (the evaluation issue registers its jobs here);
# `explain` runs none. Each runs as a Prefect task named after the function.
DOWNSTREAM_JOBS: list[DownstreamJob] = []


@dataclass
class RunSummary:
    kind: str  # audit | explain
    run_id: str
    generation: int
    status: str
    model_ref: str
    data_ref: str
    methods: list[str]
    samples: int
    explained: int
    failed: int
    maps: int
    correct: int
    labelled: int
    shards: int
    shards_skipped: int  # committed before this invocation
    shards_run: int  # computed now
    samples_computed: int  # dataset positions of the shards computed now
    store: str
    paths: dict[str, str] = field(default_factory=dict)
    first_errors: list[tuple[str, str, str]] = field(default_factory=list)
    placement: str = ""
    workers: list[dict] = field(default_factory=list)
    ray: str = ""
    prefect_api: str = ""
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: plan, ray_start, prefect_start,
    # workers_ready, shards, finish (downstream + finish + summary), flow, teardown
    seconds: float = 0.0  # wall time of run_audit

    @property
    def errors_query(self) -> str:
        return f"attn-audit query --store {self.store} \"SELECT * FROM errors WHERE run_id = '{self.run_id}'\""


@dataclass
class _Runtime:
    """What the flow needs that is not a flow parameter (not JSON, or not to be sent to the Prefect API)."""

    storage_options: dict[str, str] | None
    placement: Placement | None
    downstream: list[DownstreamJob]
    progress: bool
    ray: str
    prefect_api: str
    timings: dict[str, float]
    flow_called: float = 0.0
    workers: list[dict] = field(default_factory=list)  # info() of each actor


_RUNTIME: ContextVar[_Runtime] = ContextVar("attn_audit_runtime")


def run_audit(request: AuditRequest, *, kind: str = "audit", progress: bool = True, verbose: bool = False,
              downstream: list[DownstreamJob] | None = None) -> RunSummary:
    """Plan, start what is needed, run the `audit` (or `explain`: no downstream jobs) flow, stop what was
    started. Returns the summary; raises AttnAuditError / DatasetError for the user's mistakes and when
    shards fail after their retries (the committed ones are kept: rerunning resumes)."""
    if kind not in FLOWS:
        raise ValueError(f"kind must be one of {sorted(FLOWS)}")
    started = time.perf_counter()
    plan = plan_run(request)
    timings = {"plan": time.perf_counter() - started}
    jobs = (list(DOWNSTREAM_JOBS) if downstream is None else list(downstream)) if kind == "audit" else []
    with ExitStack() as stack:
        placement, ray_text = None, "not started (nothing to compute)"
        if plan.shards_pending:
            info = stack.enter_context(ray_session(verbose=verbose))
            placement = plan_placement(node_resources(), plan.workers, plan.gpus_per_worker, plan.device,
                                       max_workers=plan.shards_pending, worker_bytes=worker_bytes(plan.model_ref))
            timings["ray_start"] = info.seconds
            ray_text = f"{info.mode} {info.address}"
        if plan.shard_size is None:  # a new run with an automatic shard size: now the workers are known
            plan.shard_size = auto_shard_size(plan.num_samples, placement.workers if placement else 1)
        api = stack.enter_context(prefect_session())
        runtime = _Runtime(request.storage_options, placement, jobs, progress, ray_text,
                           api or "temporary local server", timings)
        token = _RUNTIME.set(runtime)
        stack.callback(_RUNTIME.reset, token)
        runner = ThreadPoolTaskRunner(max_workers=placement.workers if placement else 1)
        runtime.flow_called = time.perf_counter()
        summary = FLOWS[kind].with_options(task_runner=runner)(plan)
        flow_done = time.perf_counter()
        timings["flow"] = flow_done - runtime.flow_called
    timings["teardown"] = time.perf_counter() - flow_done  # Prefect's temporary server and a local Ray stop
    summary.timings = timings
    summary.seconds = time.perf_counter() - started
    return summary


def _execute(plan: RunPlan, kind: str) -> RunSummary:
    """The body of both flows."""
    rt = _RUNTIME.get()
    rt.timings["prefect_start"] = time.perf_counter() - rt.flow_called
    store = Store.open(plan.store, storage_options=rt.storage_options)
    try:
        run = store.begin_run(plan.spec())
    except StoreError as err:
        raise models.AttnAuditError(str(err)) from None
    shards = plan_shards(run.num_samples, run.shard_size)
    committed = store.committed_shards(run.run_id)
    todo = pending_shards(shards, committed)
    done_before = sum(s.size for s in shards if s.id in committed)
    results: list[ShardResult] = []
    outputs: dict[str, str] = {}
    try:
        with ExitStack() as actors:
            pool = actors.enter_context(_start_pool(plan, run, rt)) if todo else None
            if todo:
                results = _run_shards(plan, run, todo, rt, done_before, kind, pool)
            finishing = time.perf_counter()
            for job in rt.downstream:  # the actors stay up for these: they hold the model
                name = getattr(job, "__name__", "job").replace("_", "-")
                context = JobContext(store, store.run(run.run_id), plan, pool, rt.progress)
                outputs.update(downstream_task.with_options(task_run_name=name)(job, context) or {})
        info = store.finish_run(run.run_id)
    except BaseException:
        with contextlib.suppress(Exception):  # the original error matters more
            store.finish_run(run.run_id, failed=True)
        raise
    summary = _summarize(kind, plan, store, info, len(shards), len(committed & {s.id for s in shards}),
                         [r for r in results if r.computed], rt, outputs)
    _artifacts(summary, store)
    rt.timings["finish"] = time.perf_counter() - finishing  # downstream jobs, finish_run, summary, artifacts
    return summary


@contextmanager
def _start_pool(plan: RunPlan, run: RunInfo, rt: _Runtime):
    """The run's actors, each with the model loaded; stopped on exit."""
    if rt.placement is None:  # planned with nothing pending, yet shards are missing now
        raise models.AttnAuditError(f"run {run.run_id} lost committed shards since it was planned; run again")
    config = ExplainerConfig(plan.model_ref, plan.store, plan.device, plan.precision, plan.truncate,
                             rt.storage_options, plan.capture)
    started = time.perf_counter()
    with ActorPool(rt.placement, config, label=run.run_id) as pool:
        rt.timings["workers_ready"] = time.perf_counter() - started
        rt.workers = pool.infos
        yield pool


def _run_shards(plan: RunPlan, run: RunInfo, todo: list[Shard], rt: _Runtime, done_before: int,
                kind: str, pool: ActorPool) -> list[ShardResult]:
    job = ShardJob(run.run_id, plan.data_ref, tuple(plan.methods), plan.target, plan.batch_size, plan.label_map)
    description = f"{'auditing' if kind == 'audit' else 'explaining'} {run.num_samples:,} samples"
    started = time.perf_counter()
    with shard_progress(description, run.num_samples, done_before, rt.progress) as bar:
        futures = {explain_shard_task.with_options(task_run_name=s.name).submit(pool, job, s, bar.update): s
                   for s in todo}
        results, failures = [], []
        for future in as_completed(list(futures)):
            shard = futures[future]
            try:
                results.append(future.result())
            except Exception as err:  # after its retries
                failures.append((shard, err))
        rt.timings["shards"] = time.perf_counter() - started
        rt.timings["commits"] = sum(r.commit_seconds for r in results)  # summed over workers
    if failures:
        raise models.AttnAuditError(_failure_message(failures, len(todo), len(results)))
    return results


def _failure_message(failures: list[tuple[Shard, BaseException]], tried: int, done: int) -> str:
    """What failed, and whether running again can help: a shard that failed on its input, model or configuration
    would fail again (it was not retried); one that kept losing its worker or its commit might not."""
    shard, err = min(failures, key=lambda f: f[0].id)
    transient = [f for f in failures if is_transient(f[1])]
    if not transient:
        return f"{len(failures)} of {tried} shards failed ({shard.name}: {error_line(err)}); nothing was retried: " \
               "this error repeats until its cause is fixed"
    shard, err = min(transient, key=lambda f: f[0].id)
    return (f"{len(failures)} of {tried} shards failed, {len(transient)} of them after {RETRIES} retries (first: "
            f"{shard.name}: {error_line(err)}); committed shards are kept ({done} from this attempt): run the same "
            "command again to resume")


def _summarize(kind: str, plan: RunPlan, store: Store, info: RunInfo, shards: int, skipped: int,
               computed: list[ShardResult], rt: _Runtime, outputs: dict[str, str]) -> RunSummary:
    counts = store.sql(f"SELECT count(*) FILTER (WHERE correct) AS correct, count(correct) AS labelled "
                       f"FROM predictions WHERE run_id = '{info.run_id}'").to_pylist()[0]
    first_errors = [(e["sample_id"], e["stage"], e["message"])
                    for e in store.errors(run_id=info.run_id).slice(0, 5).to_pylist()]
    return RunSummary(
        kind=kind, run_id=info.run_id, generation=plan.generation, status=info.status, model_ref=info.model_ref,
        data_ref=info.dataset_ref, methods=list(info.methods), samples=info.num_samples, explained=info.explained,
        failed=info.failed, maps=info.maps, correct=int(counts["correct"] or 0), labelled=int(counts["labelled"] or 0),
        shards=shards, shards_skipped=skipped, shards_run=len(computed),
        samples_computed=sum(r.samples for r in computed), store=store.uri,
        paths={"store": store.uri, **outputs}, first_errors=first_errors,
        placement=rt.placement.describe() if rt.placement else "", workers=rt.workers, ray=rt.ray,
        prefect_api=rt.prefect_api, flow_run_id=flow_run.get_id(), flow_run_name=flow_run.get_name())


def _artifacts(s: RunSummary, store: Store) -> None:
    """A markdown summary and a table of the run's shards, shown on the flow run in the Prefect UI."""
    lines = [f"# attn-audit {s.kind} — run `{s.run_id}`", "", "| | |", "|---|---|",
             f"| status | **{s.status}** |", f"| model | `{s.model_ref}` |", f"| data | `{s.data_ref}` |",
             f"| methods | {', '.join(s.methods)} |", f"| samples | {s.samples:,} |",
             f"| explained | {s.explained:,} |", f"| failed | {s.failed:,} |", f"| maps | {s.maps:,} |",
             f"| shards | {s.shards} ({s.shards_skipped} already committed, {s.shards_run} computed now) |",
             f"| workers | {s.placement or 'none (nothing to compute)'} |", f"| store | `{s.store}` |"]
    lines += [f"| {name} | `{path}` |" for name, path in s.paths.items() if name != "store"]
    if s.failed:
        lines += ["", f"{s.failed:,} samples produced no maps; they are in the errors table:", "",
                  f"    {s.errors_query}"]
    create_markdown_artifact("\n".join(lines), key=f"{s.kind}-{s.run_id}", description=f"attn-audit {s.kind} summary")
    rows = store.shards(s.run_id).sort_by("shard_id").slice(0, MAX_ARTIFACT_ROWS).to_pylist()
    table = [{"shard": r["shard_id"], "positions": f"[{r['start']}:{r['stop']})", "explained": r["explained"],
              "failed": r["failed"], "maps": r["maps"], "committed_at": str(r["committed_at"]), "writer": r["writer"]}
             for r in rows]
    if table:
        create_table_artifact(table, key=f"{s.kind}-{s.run_id}-shards",
                              description=f"committed shards (first {MAX_ARTIFACT_ROWS})")


@flow(name="audit", flow_run_name="audit-{plan.run_id}", validate_parameters=True,
      description="Explain a dataset into the store shard by shard on Ray actors, then run the downstream jobs.")
def audit(plan: RunPlan) -> RunSummary:
    return _execute(plan, "audit")


@flow(name="explain", flow_run_name="explain-{plan.run_id}", validate_parameters=True,
      description="Explain a dataset into the store shard by shard on Ray actors.")
def explain(plan: RunPlan) -> RunSummary:
    return _execute(plan, "explain")


FLOWS = {"audit": audit, "explain": explain}
