"""The Prefect tasks of a run: one per shard (runs on a Ray actor, retried), one per downstream job.

They run in the flow's process (ThreadPoolTaskRunner, one thread per actor) and only wait on Ray: the maps
are computed and committed by the actor, and the task gets back counts. Retries are for what can succeed on a
second try — the shard's worker died, or its commit met too many concurrent writers — after 2 s, then 10 s;
everything else (a bad input, model or configuration) would only fail again and fails the shard at once.
"""

from __future__ import annotations

from collections.abc import Callable

from attn_audit.storage.store import StoreConflictError
from attn_audit.tasks.actors import ActorPool
from attn_audit.tasks.explain_shard import ShardJob, ShardResult
from attn_audit.tasks.shards import Shard
from deltalake.exceptions import CommitFailedError
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run
from ray.exceptions import ObjectLostError, RayActorError, WorkerCrashedError

RETRIES = 2
RETRY_DELAYS_S = [2, 10]
TRANSIENT = (RayActorError, WorkerCrashedError, ObjectLostError, StoreConflictError, CommitFailedError,
             ConnectionError, TimeoutError)


def is_transient(err: BaseException) -> bool:
    """Worth another attempt: a dead worker or a commit conflict (a RayTaskError wrapping what the shard raised
    is also an instance of that exception's class)."""
    return isinstance(err, TRANSIENT)


def _worth_retrying(task, task_run, state) -> bool:
    return is_transient(state.result(raise_on_failure=False))


@task(name="explain-shard", retries=RETRIES, retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=_worth_retrying,
      persist_result=False, cache_policy=NO_CACHE)
def explain_shard_task(pool: ActorPool, job: ShardJob, shard: Shard,
                       on_progress: Callable[[int, int], None] | None = None) -> ShardResult:
    """Explain and commit one shard on an actor of `pool`; returns its counts."""
    if on_progress is not None:
        on_progress(shard.id, 0)  # a retry starts the shard's count again
    result = pool.run(job, shard, on_progress, retry=task_run.get_run_count() > 1)
    if on_progress is not None:
        on_progress(shard.id, shard.size)
    return result


@task(name="downstream", persist_result=False, cache_policy=NO_CACHE)
def downstream_task(job: Callable, context) -> dict | None:
    """One downstream job (evaluation, report, ...) over the committed run; see flows.downstream."""
    return job(context)
