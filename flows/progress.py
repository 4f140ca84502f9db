"""A terminal progress bar (samples done / total, samples/s, ETA); silent when not a terminal."""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)


class _Rate(TextColumn):
    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f} samples/s" if speed else "… samples/s"


class ShardProgress:
    """Samples done over a run's shards, fed from many threads: `update(shard_id, done_in_shard)` as workers
    report (a retried shard starts again from 0), `finish(shard_id, samples)` when its commit is in."""

    def __init__(self, progress: Progress | None = None, task=None, already_done: int = 0):
        self._progress, self._task = progress, task
        self._lock = threading.Lock()
        self._by_shard: dict[int, int] = {}
        self.already_done = already_done

    @property
    def done(self) -> int:
        with self._lock:
            return self.already_done + sum(self._by_shard.values())

    def update(self, shard_id: int, done: int) -> None:
        with self._lock:
            self._by_shard[shard_id] = done
            total = self.already_done + sum(self._by_shard.values())
        if self._progress is not None:
            self._progress.update(self._task, completed=total)

    def finish(self, shard_id: int, samples: int) -> None:
        self.update(shard_id, samples)


@contextmanager
def shard_progress(description: str, total: int, already_done: int = 0, enabled: bool = True):
    """Yields a ShardProgress; draws a bar on stderr when `enabled` and stderr is a terminal. Samples of
    shards committed by an earlier run start the bar without counting towards samples/s."""
    if not enabled or not sys.stderr.isatty():
        yield ShardProgress(already_done=already_done)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=already_done)
        yield ShardProgress(progress, task, already_done)
