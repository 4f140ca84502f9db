"""The run's Ray actors as one pool, and the one retry policy of a run.

    with WorkerPool.of_explainers(placement, ExplainerConfig(model_ref, store_uri, ...)) as pool:  # models load
        for outcome in pool.explain(job, shards, on_progress=bar.update):   # each shard's, as it ends
            ...
        for outcome in pool.evaluate([(chunk_job, c) for c in chunks]):     # the evaluation, on the same actors
            ...

Every shard of a run and every evaluation chunk after it is a work item: one call on one actor, which computes it
and commits it to the store itself. `ray.util.ActorPool` holds the idle actors and lends them, one item per actor
at a time (the call's own ObjectRef says which item ended); this pool is the only one that retries anything (Ray
never retries a call: max_task_retries=0), with one policy:

- retried, after RETRY_DELAYS_S (1 s, then 5 s), up to ATTEMPTS (3) attempts per item: what can pass on another
  try — its worker died or is restarting (the RayActorError family, ActorDiedError and ActorUnavailableError among
  them; WorkerCrashedError, ObjectLostError), the store met too many concurrent writers (StoreConflictError, a
  Delta CommitFailedError) or lost its connection (ConnectionError, TimeoutError);
- anything else the call raised (a bad input, model or configuration) fails the item at once: it would fail again.

Items are idempotent (a shard's commit, a chunk's keyed appends), so an attempt cut anywhere is simply run again.
An actor whose worker died is left out of the pool until it answers again (Ray restarts it, up to MAX_RESTARTS
times, and it loads its model again); one Ray gave up on (ActorDiedError) is replaced by a fresh actor. While a
shard runs, its actor is asked for its progress (`progress()`, on the actor's second thread) between results.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import ray
from attn_audit.storage.store import StoreConflictError
from attn_audit.tasks.actors import ExplainerActor, ExplainerConfig, Placement, error_line
from attn_audit.tasks.evaluate.chunks import Chunk
from attn_audit.tasks.evaluate.run import ChunkJob
from attn_audit.tasks.explain_shard import ShardJob
from attn_audit.tasks.shards import Shard
from deltalake.exceptions import CommitFailedError
from ray.exceptions import (
    ActorDiedError,
    GetTimeoutError,
    ObjectLostError,
    RayActorError,
    RayError,
    WorkerCrashedError,
)
from ray.util import ActorPool

from attn_audit import models

ATTEMPTS = 3  # per item: the first and two retries
RETRY_DELAYS_S = (1.0, 5.0)  # before the second and the third attempt
TRANSIENT = (RayActorError, WorkerCrashedError, ObjectLostError, StoreConflictError, CommitFailedError,
             ConnectionError, TimeoutError)
MAX_RESTARTS = 3  # per actor: Ray brings a dead worker process back this many times (then it is replaced)
NAMESPACE = "attn-audit"
READY_TIMEOUT_S = 600.0  # model load in an actor; past this, a new actor counts as not starting
POLL_S = 0.5  # how often running shards are asked for their progress


_TRANSIENT_NAMES = {f"{c.__module__}.{c.__qualname__}" for c in TRANSIENT}


def is_transient(err: BaseException) -> bool:
    """Worth another attempt (see the module docstring); a RayTaskError wrapping what the call raised is also an
    instance of that exception's class. Matched by class name, not identity: a class that does not pickle by
    reference (deltalake's CommitFailedError lives in the extension module `_internal`) arrives from a worker as a
    copy of itself."""
    return any(f"{k.__module__}.{k.__qualname__}" in _TRANSIENT_NAMES for k in type(err).__mro__)


class WorkItem(Protocol):
    """One call on an actor. `progress_id`: what the actor's progress() names while it runs the item (a shard id),
    None when it reports none."""

    @property
    def name(self) -> str: ...

    @property
    def progress_id(self) -> int | None: ...

    def call(self, actor, attempt: int) -> ray.ObjectRef: ...


@dataclass(frozen=True)
class ShardItem:
    job: ShardJob
    shard: Shard

    @property
    def name(self) -> str:
        return self.shard.name

    @property
    def progress_id(self) -> int:
        return self.shard.id

    def call(self, actor, attempt: int) -> ray.ObjectRef:
        # a later attempt first looks for the commit an earlier one may have made before it was cut
        return actor.run_shard.remote(self.job, self.shard, retry=attempt > 1)


@dataclass(frozen=True)
class ChunkItem:
    job: ChunkJob
    chunk: Chunk
    progress_id = None

    @property
    def name(self) -> str:
        return f"evaluation of positions [{self.chunk.start}:{self.chunk.stop})"

    def call(self, actor, attempt: int) -> ray.ObjectRef:
        return actor.evaluate_chunk.remote(self.job, self.chunk)


@dataclass(frozen=True)
class Outcome:
    """How an item ended: its call's value, or the error it failed with after the attempts the policy allowed."""

    item: Any
    value: Any = None
    error: BaseException | None = None
    attempts: int = 1

    @property
    def failed(self) -> bool:
        return self.error is not None


@dataclass
class _Call:
    item: Any
    attempt: int
    actor: Any
    probe: ray.ObjectRef | None = None  # a progress() call in flight
    reported: int = 0  # the count last reported (an attempt starts at 0)


class WorkerPool:
    """`workers` actors made by `new_actor()`; `run()` runs work items on them (see the module docstring)."""

    def __init__(self, new_actor: Callable[[], Any], workers: int, describe: str = "", logger=None,
                 poll_seconds: float = POLL_S, retry_delays: tuple[float, ...] = RETRY_DELAYS_S):
        self._new_actor, self.workers, self.describe = new_actor, workers, describe
        self.log = logger or logging.getLogger(__name__)
        self.poll_seconds = poll_seconds
        self.retry_delays = retry_delays  # one per retry: ATTEMPTS - 1 of them
        self.max_replacements = workers * MAX_RESTARTS
        self.infos: list[dict] = []  # info() of each actor as it started
        self._actors: set = set()  # every actor of the pool: lent, idle or recovering
        self._pool: ActorPool | None = None
        self._calls: dict[ray.ObjectRef, _Call] = {}
        self._recovering: dict[ray.ObjectRef, tuple[Any, float]] = {}  # info() probe -> (actor, deadline)
        self._replacements = 0
        self._lost: BaseException | None = None  # what took the last actor replaced
        self._closed = False

    @classmethod
    def of_explainers(cls, placement: Placement, config: ExplainerConfig, label: str = "pool",
                      logger=None) -> WorkerPool:
        """`placement.workers` ExplainerActors of `config`, named `<label>/<random>/<serial>` in NAMESPACE."""
        remote, prefix, serial = ray.remote(ExplainerActor), f"{label}/{uuid.uuid4().hex[:8]}", itertools.count()

        def new_actor():
            return remote.options(num_cpus=placement.num_cpus, num_gpus=placement.num_gpus,
                                  max_restarts=MAX_RESTARTS, max_task_retries=0, max_concurrency=2,
                                  name=f"{prefix}/{next(serial)}", namespace=NAMESPACE).remote(config,
                                                                                               placement.threads)

        return cls(new_actor, placement.workers, placement.describe(), logger)

    # lifecycle
    def start(self, timeout: float = READY_TIMEOUT_S) -> list[dict]:
        """Create the actors and wait until each has loaded its model; returns their info()."""
        actors = [self._new_actor() for _ in range(self.workers)]
        self._actors = set(actors)
        try:
            self.infos = ray.get([a.info.remote() for a in actors], timeout=timeout)
        except GetTimeoutError:
            self.shutdown()
            raise models.AttnAuditError(
                f"the Ray workers did not start within {timeout:.0f} s ({self.describe}); is the cluster busy, or "
                "are its nodes missing the resources?") from None
        except RayActorError as err:
            self.shutdown()
            raise models.AttnAuditError(f"a Ray worker could not load the model: {error_line(err)}") from None
        self._pool = ActorPool(actors)
        return self.infos

    def shutdown(self) -> None:
        self._closed = True
        for a in self._actors:
            _kill(a)
        self._actors = set()

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # work
    def explain(self, job: ShardJob, shards: Iterable[Shard],
                on_progress: Callable[[int, int], None] | None = None) -> Iterator[Outcome]:
        """Explain and commit each shard; Outcome.value is its ShardResult."""
        return self.run([ShardItem(job, s) for s in shards], on_progress)

    def evaluate(self, work: Iterable[tuple[ChunkJob, Chunk]]) -> Iterator[Outcome]:
        """Run each (job, chunk) of a stored run's evaluation; Outcome.value: True when something was committed now."""
        return self.run([ChunkItem(job, c) for job, c in work])

    def run(self, items: Iterable[WorkItem], on_progress: Callable[[int, int], None] | None = None
            ) -> Iterator[Outcome]:
        """Every item, one call on an actor each, retried as the policy says; yields each item's Outcome as it
        ends. `on_progress(progress_id, done)` as the actor of an item reports (0 when an attempt starts)."""
        if self._pool is None or self._closed:
            raise RuntimeError("the worker pool is not running")
        order = itertools.count()
        due = [(0.0, next(order), item, 1) for item in items]  # a heap of (not before, order, item, attempt)
        try:
            while due or self._calls:
                self._tend_recovering()
                self._submit(due, on_progress)
                if due and not (self._calls or self._recovering or self._pool.has_free()):
                    self.log.error("no worker left: %s", error_line(self._lost))
                    for _, _, item, attempt in sorted(due):
                        yield Outcome(item, error=self._lost, attempts=attempt - 1)
                    return
                self._report_progress(on_progress)
                ended = self._wait(due)
                if ended is not None:
                    outcome = self._finish(ended, due, order)
                    if outcome is not None:
                        yield outcome
        finally:
            if self._calls:  # left half-way (the caller stopped): its actors are still busy
                self.shutdown()

    def _submit(self, due: list, on_progress) -> None:
        """Lend the ActorPool's idle actors to the items that are due, one each."""
        now = time.monotonic()
        while due and due[0][0] <= now and self._pool.has_free():
            _, _, item, attempt = heapq.heappop(due)
            actor = self._pool.pop_idle()
            self._calls[item.call(actor, attempt)] = _Call(item, attempt, actor)
            if on_progress is not None and item.progress_id is not None:
                on_progress(item.progress_id, 0)  # an attempt starts the item's count again

    def _wait(self, due: list) -> ray.ObjectRef | None:
        """Wait up to a poll period (less when a retry falls due) for a call to end; the call that did, or None."""
        timeout = self.poll_seconds
        if due and self._pool.has_free():
            timeout = max(0.0, min(timeout, due[0][0] - time.monotonic()))
        if not self._calls:
            time.sleep(timeout)
            return None
        ready, _ = ray.wait(list(self._calls), num_returns=1, timeout=timeout)
        return ready[0] if ready else None

    def _finish(self, ref: ray.ObjectRef, due: list, order) -> Outcome | None:
        """The ended call `ref`: its actor back to the ActorPool (unless its worker was lost), and its Outcome, or
        None when it is to be tried again."""
        call = self._calls.pop(ref)
        try:
            value, error = ray.get(ref), None
        except Exception as err:  # what the call raised, or Ray's word that its worker died
            value, error = None, err
        if isinstance(error, RayActorError):
            self._worker_lost(call.actor, error)
        else:
            self._pool.push(call.actor)
        if error is None or not is_transient(error) or call.attempt >= ATTEMPTS:
            return Outcome(call.item, value, error, call.attempt)
        delay = self.retry_delays[call.attempt - 1]
        self.log.warning("%s: %s; attempt %d of %d in %g s", call.item.name, error_line(error), call.attempt + 1,
                         ATTEMPTS, delay)
        heapq.heappush(due, (time.monotonic() + delay, next(order), call.item, call.attempt + 1))
        return None

    # actors
    def _worker_lost(self, actor, error: RayActorError) -> None:
        if isinstance(error, ActorDiedError):  # Ray gave up on it
            self._replace(actor, error)
            return
        # Ray is restarting its worker: kept out of the ActorPool until it answers (a call now would fail at once)
        self._recover(actor, time.monotonic() + READY_TIMEOUT_S)

    def _recover(self, actor, deadline: float) -> None:
        self._recovering[actor.info.remote()] = (actor, deadline)

    def _tend_recovering(self) -> None:
        """Actors that answer again rejoin the ActorPool; those Ray gave up on, or that stay silent past their
        deadline, are replaced."""
        if not self._recovering:
            return
        ready, _ = ray.wait(list(self._recovering), num_returns=len(self._recovering), timeout=0)
        for ref in ready:
            actor, deadline = self._recovering.pop(ref)
            try:
                ray.get(ref)
                self._pool.push(actor)
            except ActorDiedError as err:
                self._replace(actor, err)
            except RayError as err:  # still restarting
                if time.monotonic() > deadline:
                    self._replace(actor, err)
                else:
                    self._recover(actor, deadline)
        for ref, (actor, deadline) in list(self._recovering.items()):
            if time.monotonic() > deadline:
                del self._recovering[ref]
                self._replace(actor, GetTimeoutError(f"a restarted Ray worker did not answer within "
                                                     f"{READY_TIMEOUT_S:.0f} s"))

    def _replace(self, actor, error: BaseException) -> None:
        _kill(actor)
        self._actors.discard(actor)
        self._lost = error
        if self._replacements >= self.max_replacements:
            self.log.error("a Ray worker was lost (%s); %d replaced already, no more", error_line(error),
                           self._replacements)
            return
        self._replacements += 1
        self.log.warning("a Ray worker was lost (%s); starting a new one", error_line(error))
        fresh = self._new_actor()
        self._actors.add(fresh)
        self._recover(fresh, time.monotonic() + READY_TIMEOUT_S)

    def _report_progress(self, on_progress) -> None:
        """Collect the progress() answers that are in, and ask again where none is in flight."""
        if on_progress is None:
            return
        probes = {c.probe: c for c in self._calls.values() if c.probe is not None}
        ready, _ = ray.wait(list(probes), num_returns=len(probes), timeout=0) if probes else ([], [])
        for ref in ready:
            call = probes[ref]
            call.probe = None
            try:
                running, done = ray.get(ref)
            except RayError:  # the call itself reports its worker's death
                continue
            if running == call.item.progress_id and done != call.reported:
                call.reported = done
                on_progress(running, done)
        for call in self._calls.values():
            if call.probe is None and call.item.progress_id is not None:
                call.probe = call.actor.progress.remote()


def _kill(actor) -> None:
    with contextlib.suppress(Exception):  # already gone
        ray.kill(actor, no_restart=True)
