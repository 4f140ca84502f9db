"""What a person watching an audit reads when stderr is a log file, not a terminal: one line per start-up phase,
then plain progress lines at most every PLAIN_EVERY_S seconds and one line when the work ends, never wrapped."""

import io

import pytest
from attn_audit.flows import progress
from rich.console import Console


@pytest.fixture
def log(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(progress, "console", Console(file=out, width=40))  # narrower than any line below
    monkeypatch.setattr(progress, "_terminal", lambda: False)
    return out


def test_each_phase_is_one_whole_line(log):
    progress.show_phase("starting 2 CPU workers (1 CPU each, 1 torch thread), each loading builtin:fashion-vit…")
    progress.show_phase("not shown", enabled=False)
    assert log.getvalue().splitlines() == [
        "starting 2 CPU workers (1 CPU each, 1 torch thread), each loading builtin:fashion-vit…"]


def test_plain_progress_lines_are_spaced_and_the_last_is_not_repeated(log, monkeypatch):
    clock = iter([0.0, 1.0, 6.0, 7.0, 12.0, 12.5])  # start, then one reading per update / close
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress.shard_progress("auditing 1,000 samples", 1000, already_done=200) as bar:
        bar.update(0, 100)  # t = 1: too soon for a line
        bar.update(0, 300)  # t = 6: a line; 300 new samples in 6 s
        bar.update(1, 100)  # t = 7: too soon
        bar.finish(1, 500)  # t = 12: a line at 1,000
    assert log.getvalue().splitlines() == [
        "auditing 1,000 samples: 500 / 1,000 (50%), 50.0 samples/s, about 10 s left",
        "auditing 1,000 samples: 1,000 / 1,000 (100%), 66.7 samples/s"]


def test_work_that_ends_between_lines_still_says_where_it_ended(log, monkeypatch):
    clock = iter([0.0, 1.0, 2.0])
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    with progress.shard_progress("evaluating", 10) as bar:
        bar.finish(0, 10)
    assert log.getvalue().splitlines() == ["evaluating: 10 / 10 (100%), 5.0 samples/s"]


def test_disabled_progress_prints_nothing_but_still_counts(log):
    with progress.shard_progress("evaluating", 10, enabled=False) as bar:
        bar.update(0, 4)
    assert bar.done == 4 and log.getvalue() == ""
