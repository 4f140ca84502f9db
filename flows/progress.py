"""What a person watching an audit sees on stderr: the start-up's phases ("starting Prefect…") and a progress
bar (samples done / total, samples/s, ETA) on a terminal; the same as plain lines, one every few seconds, when
stderr is a file or a pipe (CI logs, `nohup`, a scheduler's log)."""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

console = Console(stderr=True)
PLAIN_EVERY_S = 5.0  # a plain progress line at most this often (and one when the work ends)


def _terminal() -> bool:
    return sys.stderr.isatty()


class _Phases:
    """The start-up phase now under way, on one line: a spinner on a terminal, one plain line per phase
    otherwise. One per process (the flows run in the process that started them, which owns the terminal)."""

    def __init__(self):
        self._status = None

    def show(self, text: str) -> None:
        if not _terminal():
            _plain(text)
        elif self._status is None:
            self._status = console.status(text)
            self._status.start()
        else:
            self._status.update(text)

    def end(self) -> None:
        """Clear the line (a bar or the summary takes over)."""
        if self._status is not None:
            self._status.stop()
            self._status = None


phases = _Phases()


def show_phase(text: str, enabled: bool = True) -> None:
    """Say which start-up phase is under way ("starting 2 Ray workers…"); nothing when not `enabled`."""
    if enabled:
        phases.show(text)


def _plain(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)  # a log line: never wrapped at 80 columns


class _Rate(TextColumn):
    def __init__(self):
        super().__init__("")

    def render(self, task):
        speed = task.finished_speed or task.speed
        return f"{speed:,.1f} samples/s" if speed else "… samples/s"


class _PlainLines:
    """The bar as plain lines: 'auditing 1,000 samples: 250 / 1,000 (25%), 40.1 samples/s, about 18 s left'."""

    def __init__(self, description: str, total: int, already_done: int):
        self.description, self.total, self.already_done = description, total, already_done
        self.started = self.printed = time.monotonic()
        self.last = self.shown = already_done

    def update(self, done: int) -> None:
        now = time.monotonic()
        self.last = done
        if now - self.printed >= PLAIN_EVERY_S:
            self.printed = now
            self._print(now)

    def close(self) -> None:
        if self.shown != self.last or self.last == self.already_done:
            self._print(time.monotonic())

    def _print(self, now: float) -> None:
        self.shown = self.last
        new, elapsed = self.last - self.already_done, now - self.started
        line = f"{self.description}: {self.last:,} / {self.total:,} ({self.last / max(self.total, 1):.0%})"
        if new > 0 and elapsed > 0:
            rate = new / elapsed
            left = (self.total - self.last) / rate
            line += f", {rate:,.1f} samples/s" + (f", about {left:.0f} s left" if self.last < self.total else "")
        _plain(line)


class ShardProgress:
    """Samples done over a run's shards, fed from many threads: `update(shard_id, done_in_shard)` as workers
    report (a retried shard starts again from 0), `finish(shard_id, samples)` when its commit is in. `show(total)`
    draws the count (a bar or a plain line)."""

    def __init__(self, show=None, already_done: int = 0):
        self._show = show
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
        if self._show is not None:
            self._show(total)

    def finish(self, shard_id: int, samples: int) -> None:
        self.update(shard_id, samples)


@contextmanager
def shard_progress(description: str, total: int, already_done: int = 0, enabled: bool = True):
    """Yields a ShardProgress; when `enabled`, draws a bar on stderr (plain lines when stderr is not a terminal).
    Samples of shards committed by an earlier run start the count without counting towards samples/s."""
    phases.end()
    if not enabled:
        yield ShardProgress(already_done=already_done)
    elif not _terminal():
        lines = _PlainLines(description, total, already_done)
        yield ShardProgress(lines.update, already_done)
        lines.close()
    else:
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
                   TimeRemainingColumn())
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(description, total=total, completed=already_done)
            yield ShardProgress(lambda done: progress.update(task, completed=done), already_done)
