"""Small Ray actors that fail as told, for the worker-pool tests. Kept apart from the test module and free of
torch / transformers: Ray imports a class's module in every worker process it starts, and each of these tests
starts several (restarts, replacements)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import ray
from attn_audit.storage.store.errors import StoreConflictError
from deltalake.exceptions import CommitFailedError


class Worker:
    """An actor with what the pool calls on every actor (info, progress) and `work`, which fails as told."""

    def __init__(self, broken: str | None = None):
        if broken and os.path.exists(broken):  # a model that no longer loads
            raise RuntimeError("cannot load the model")
        self._running, self._done = None, 0

    def info(self) -> dict:
        return {"pid": os.getpid()}

    def progress(self) -> tuple[int | None, int]:
        return self._running, self._done

    def work(self, key: int, fails: str, attempt: int, steps: int) -> tuple[int, int]:
        self._running, self._done = key, 0
        try:
            for _ in range(steps):
                time.sleep(0.2)
                self._done += 1
                if fails == "worker dies" and attempt == 1 and self._done == 3:
                    os.kill(os.getpid(), signal.SIGKILL)
            if fails == "store conflict" and attempt == 1:
                raise StoreConflictError("too many concurrent writers")
            if fails == "commit conflict":
                raise CommitFailedError("a concurrent transaction won")
            if fails == "input":
                raise ValueError("bad input")
            return key, os.getpid()
        finally:
            self._running = None


@dataclass(frozen=True)
class Item:
    key: int
    fails: str = ""
    steps: int = 1

    @property
    def name(self) -> str:
        return f"item {self.key}"

    @property
    def progress_id(self) -> int:
        return self.key

    def call(self, actor, attempt: int):
        return actor.work.remote(self.key, self.fails, attempt, self.steps)


def new_worker(max_restarts: int = 1, broken: str | None = None):
    """A function that starts one Worker actor (what WorkerPool calls to start or replace an actor)."""
    remote = ray.remote(Worker)
    return lambda: remote.options(num_cpus=0.5, max_restarts=max_restarts, max_task_retries=0,
                                  max_concurrency=2).remote(broken)
