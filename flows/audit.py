"""The `audit` and `explain` flows: plan the request → start or attach Ray → the pending shards on a pool of Ray
actors (each actor explains its shard and commits it to the store; tasks.workers retries what can pass on another
try) → downstream jobs (audit only: evaluation, report, ...) → finish the run → summary (terminal table, Prefect
artifacts).

The flows take the request itself as their parameters, so `prefect deploy` of `flows/audit.py:audit` runs an audit
with no script of ours around it. `run_audit` is the in-process entry point (the CLI's `audit` and `explain`, the
Python API): it checks the request before anything starts (flows.plan), uses Prefect's temporary server or
PREFECT_API_URL (flows.prefect_settings), and calls the flow.

    summary = run_audit(AuditRequest(model="builtin:fashion-vit", data="builtin:fashion-canvas",
                                     methods=["chefer2021", "rollout"], store="out/store"))

See docs/workflow.md.
"""

from __future__ import annotations

import contextlib
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from attn_audit.flows.downstream import EVALUATE_AND_REPORT, NONE, Downstream, JobContext, downstream_task
from attn_audit.flows.plan import RunPlan, plan_run
from attn_audit.flows.prefect_settings import api_url, prefect_session
from attn_audit.flows.progress import ShardProgress, phases, shard_progress, show_phase
from attn_audit.flows.ray_cluster import ray_address, ray_session
from attn_audit.flows.request import AuditRequest
from attn_audit.storage.store import RunInfo, Store, StoreError
from attn_audit.tasks.actors import ExplainerConfig, Placement, error_line, node_resources, place_run, worker_bytes
from attn_audit.tasks.explain_shard import ShardJob, ShardResult
from attn_audit.tasks.shards import Shard, auto_shard_size, pending_shards, plan_shards
from attn_audit.tasks.workers import ATTEMPTS, Outcome, WorkerPool, is_transient
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.runtime import flow_run

from attn_audit import models

MAX_ARTIFACT_ROWS = 500


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
    retried: dict[str, int] = field(default_factory=dict)  # shard name -> attempts, where it took more than one
    placement: str = ""
    workers: list[dict] = field(default_factory=list)
    ray: str = ""
    prefect_api: str = ""
    flow_run_id: str | None = None
    flow_run_name: str | None = None
    timings: dict[str, float] = field(default_factory=dict)  # seconds: check (run_audit's plan), prefect_start,
    # plan (the flow's), ray_start, workers_ready, shards, commits, finish (downstream + finish + summary), ray_stop,
    # teardown (Prefect's temporary server)
    seconds: float = 0.0  # wall time of run_audit

    @property
    def errors_query(self) -> str:
        return f"attn-audit query --store {self.store} \"SELECT * FROM errors WHERE run_id = '{self.run_id}'\""


@dataclass
class _Session:
    """What one flow run works with besides its parameters: credentials (never a parameter: the Prefect API stores
    parameters), the placement of its actors once Ray is up, and its timings."""

    storage_options: dict[str, str] | None
    progress: bool
    timings: dict[str, float]
    placement: Placement | None = None
    ray: str = "not started (nothing to compute)"
    workers: list[dict] = field(default_factory=list)  # info() of each actor
    retried: dict[str, int] = field(default_factory=dict)  # see RunSummary


# Object-store credentials handed to run_audit in this process, by store URI (see flows.request)
_STORAGE_OPTIONS: dict[str, dict[str, str]] = {}


def run_audit(request: AuditRequest, *, kind: str = "audit", progress: bool = True, verbose: bool = False,
              downstream: Downstream | None = None, storage_options: dict[str, str] | None = None) -> RunSummary:
    """Check the request, then run the `audit` (or `explain`: no downstream jobs) flow on Prefect's temporary
    server or PREFECT_API_URL. Returns the summary; raises AttnAuditError / DatasetError for the user's mistakes
    (before any server starts) and when shards fail after their retries (the committed ones are kept: rerunning
    resumes)."""
    if kind not in FLOWS:
        raise ValueError(f"kind must be one of {sorted(FLOWS)}")
    started = time.perf_counter()
    plan_run(request, storage_options)  # the user's mistakes end here, as one line, before Prefect and Ray start
    checked = time.perf_counter()
    if storage_options:
        _STORAGE_OPTIONS[request.compute.store] = storage_options
    url = api_url()
    show_phase(f"connecting to Prefect at {url}…" if url else "starting Prefect (a temporary local server)…", progress)
    try:
        with prefect_session() as api:
            called = time.time()
            options = {"downstream": downstream or EVALUATE_AND_REPORT} if kind == "audit" else {}
            summary = FLOWS[kind](request, progress=progress, verbose=verbose, **options)
            flow_done = time.perf_counter()
    finally:
        phases.end()
    summary.prefect_api = api or "temporary local server"
    summary.timings = {"check": checked - started, "prefect_start": summary.timings.pop("flow_started_at") - called,
                       **summary.timings, "teardown": time.perf_counter() - flow_done}
    summary.seconds = time.perf_counter() - started
    return summary


def _execute(request: AuditRequest, downstream: Downstream, kind: str, progress: bool, verbose: bool) -> RunSummary:
    """The body of both flows."""
    timings = {"flow_started_at": time.time()}
    options = _STORAGE_OPTIONS.get(request.compute.store)
    started = time.perf_counter()
    plan = plan_run(request, options)
    timings["plan"] = time.perf_counter() - started
    _name_flow_run(f"{kind}-{plan.run_id}")
    rt = _Session(options, progress, timings)
    with ExitStack() as stack:
        if plan.shards_pending:
            address = ray_address()
            show_phase(f"connecting to the Ray cluster at {address}…" if address else "starting Ray…", progress)
            info = stack.enter_context(ray_session(verbose=verbose))
            rt.placement, plan.shard_size = place_run(  # a new run's automatic shard size: for these workers
                node_resources(), plan.num_samples, plan.shards_pending, plan.shard_size, plan.compute.workers,
                plan.compute.gpus_per_worker, plan.compute.device, worker_bytes(plan.model_ref))
            timings["ray_start"] = info.seconds
            rt.ray = f"{info.mode} {info.address}"
        if plan.shard_size is None:  # a new run with nothing to compute (no samples): no workers
            plan.shard_size = auto_shard_size(plan.num_samples, 1)
        summary = _audit_run(plan, downstream, kind, rt)
        stopping = time.perf_counter()
    timings["ray_stop"] = time.perf_counter() - stopping  # a local Ray stops with the flow
    summary.timings = timings
    return summary


def _name_flow_run(name: str) -> None:
    """Name the flow run after its run id (known once planned), so the Prefect UI finds it by the store's id."""
    run_id = flow_run.get_id()
    if run_id:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=name)


def _audit_run(plan: RunPlan, downstream: Downstream, kind: str, rt: _Session) -> RunSummary:
    """Begin the run, explain its pending shards, run the downstream jobs, finish it."""
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
            for job in downstream.steps():  # the actors stay up for these: they hold the model
                context = JobContext(store, store.run(run.run_id), plan, downstream, pool, rt.progress)
                outputs.update(downstream_task.with_options(task_run_name=job.__name__)(job, context) or {})
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
def _start_pool(plan: RunPlan, run: RunInfo, rt: _Session):
    """The run's actors, each with the model loaded; stopped on exit."""
    if rt.placement is None:  # planned with nothing pending, yet shards are missing now
        raise models.AttnAuditError(f"run {run.run_id} lost committed shards since it was planned; run again")
    maps = plan.request.maps
    config = ExplainerConfig(plan.model_ref, plan.store, plan.compute.device, maps.precision, maps.truncate,
                             rt.storage_options, maps.capture)
    started = time.perf_counter()
    show_phase(f"starting {rt.placement.describe()}, each loading {plan.model_ref}…", rt.progress)
    with WorkerPool.of_explainers(rt.placement, config, label=run.run_id, logger=get_run_logger()) as pool:
        rt.timings["workers_ready"] = time.perf_counter() - started
        rt.workers = pool.infos
        yield pool


def _run_shards(plan: RunPlan, run: RunInfo, todo: list[Shard], rt: _Session, done_before: int,
                kind: str, pool: WorkerPool) -> list[ShardResult]:
    job = ShardJob(run.run_id, plan.data_ref, tuple(plan.methods), plan.target, plan.compute.batch_size,
                   plan.label_map)
    description = f"{'auditing' if kind == 'audit' else 'explaining'} {run.num_samples:,} samples"
    started = time.perf_counter()
    with shard_progress(description, run.num_samples, done_before, rt.progress) as bar:
        name = f"{len(todo)} shard{'s' if len(todo) != 1 else ''}"
        done = explain_shards.with_options(task_run_name=name)(pool, job, todo, bar)
    rt.timings["shards"] = time.perf_counter() - started
    results = [o.value for o in done]
    rt.timings["commits"] = sum(r.commit_seconds for r in results)  # summed over workers
    rt.retried = {o.item.name: o.attempts for o in done if o.attempts > 1}
    return results


@task(name="explain-shards", persist_result=False, cache_policy=NO_CACHE)
def explain_shards(pool: WorkerPool, job: ShardJob, shards: list[Shard], bar: ShardProgress) -> list[Outcome]:
    """Every pending shard on the pool's actors: one Prefect task for the whole phase, with no retries of its own
    (the pool's policy is the only one). The outcomes of the committed shards; AttnAuditError saying what failed,
    once every other shard is committed."""
    done, failures = [], []
    for outcome in pool.explain(job, shards, on_progress=bar.update):
        if outcome.failed:
            failures.append(outcome)
            continue
        bar.finish(outcome.item.shard.id, outcome.item.shard.size)
        done.append(outcome)
    if failures:
        raise models.AttnAuditError(_failure_message(failures, len(shards), len(done)))
    return done


def _failure_message(failures: list[Outcome], tried: int, done: int) -> str:
    """What failed, and whether running again can help: a shard that failed on its input, model or configuration
    would fail again (it was not retried); one that kept losing its worker or its commit might not."""
    first = min(failures, key=lambda o: o.item.shard.id)
    transient = [o for o in failures if is_transient(o.error)]
    if not transient:
        return f"{len(failures)} of {tried} shards failed ({first.item.name}: {error_line(first.error)}); nothing " \
               "was retried: this error repeats until its cause is fixed"
    first = min(transient, key=lambda o: o.item.shard.id)
    return (f"{len(failures)} of {tried} shards failed, {len(transient)} of them still failing after up to "
            f"{ATTEMPTS} attempts (first: {first.item.name}: {error_line(first.error)}); committed shards are kept "
            f"({done} from this attempt): run the same command again to resume")


def _summarize(kind: str, plan: RunPlan, store: Store, info: RunInfo, shards: int, skipped: int,
               computed: list[ShardResult], rt: _Session, outputs: dict[str, str]) -> RunSummary:
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
        paths={"store": store.uri, **outputs}, first_errors=first_errors, retried=rt.retried,
        placement=rt.placement.describe() if rt.placement else "", workers=rt.workers, ray=rt.ray,
        flow_run_id=flow_run.get_id(), flow_run_name=f"{kind}-{info.run_id}")


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


@flow(name="audit", validate_parameters=True,
      description="Explain a dataset into the store shard by shard on Ray actors, then run the downstream jobs.")
def audit(request: AuditRequest, downstream: Downstream = EVALUATE_AND_REPORT, progress: bool = False,
          verbose: bool = False) -> RunSummary:
    """`request`: what to explain and how (flows.request); `downstream`: the jobs after the shards (default
    evaluation and report); `progress`: draw progress bars (a terminal watches); `verbose`: Ray's own logs."""
    return _execute(request, downstream, "audit", progress, verbose)


@flow(name="explain", validate_parameters=True,
      description="Explain a dataset into the store shard by shard on Ray actors.")
def explain(request: AuditRequest, progress: bool = False, verbose: bool = False) -> RunSummary:
    return _execute(request, NONE, "explain", progress, verbose)


FLOWS = {"audit": audit, "explain": explain}
