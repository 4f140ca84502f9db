"""The Prefect tasks of a run: one per shard (runs on a Ray actor, retried), one per downstream job.

They run in the flow's process (ThreadPoolTaskRunner, one thread per actor) and only wait on Ray: the maps
are computed and committed by the actor, and the task gets back counts. Retries: a shard whose worker died,
or whose commit hit a transient store error, runs again after 2 s, then 10 s; errors that would only repeat
(a bad model or configuration: AttnAuditError, DatasetError) fail at once.
"""

from __future__ import annotations

from collections.abc import Callable

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import task_run

import models
from storage.datasets import DatasetError
from tasks.actors import ActorPool, PoolClosed
from tasks.explain_shard import ShardJob, ShardResult
from tasks.shards import Shard

RETRIES = 2
RETRY_DELAYS_S = [2, 10]


def _worth_retrying(task, task_run, state) -> bool:
    err = state.result(raise_on_failure=False)
    if isinstance(err, PoolClosed):
        return False
    # a RayTaskError wrapping one of ours is also an instance of it
    return not isinstance(err, models.AttnAuditError | DatasetError)


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
    """One downstream job (evaluation, report, ...) over the committed run; see flows.audit.DOWNSTREAM_JOBS."""
    return job(context)
