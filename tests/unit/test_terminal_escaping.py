"""Sample ids, paths and messages reach the terminal as they are: never read as Rich markup, control
characters shown rather than obeyed."""

import io

import pytest
from attn_audit.flows import cli
from attn_audit.flows.audit import RunSummary
from attn_audit.flows.terminal import literal
from rich.console import Console

HOSTILE_ID = "[/x] bad \x1b[2J[bold]id"
HOSTILE_PATH = "/data/br[red]/store"


def printed(text: str) -> str:
    out = io.StringIO()
    Console(file=out, width=300, color_system=None).print(text)
    return out.getvalue().rstrip("\n")


@pytest.mark.parametrize("value, shown", [
    ("[/x] bad", "[/x] bad"),
    ("br[red]", "br[red]"),
    ("C:\\[bold]x\\", "C:\\[bold]x\\"),
    ("a\x1b[2Jb\x07c\rd", "a\\x1b[2Jb\\x07c\\rd"),
    ("\u202eevil.png", "\\u202eevil.png"),
    ("two\nlines", "two\nlines"),
    (42, "42"),
])
def test_literal_text_prints_as_it_is(value, shown):
    assert printed(literal(value)) == shown


@pytest.fixture
def terminal(monkeypatch):
    """The CLI's two consoles, writing to buffers wide enough that nothing wraps."""
    out, err = io.StringIO(), io.StringIO()
    monkeypatch.setattr(cli, "console", Console(file=out, width=300, color_system=None))
    monkeypatch.setattr(cli, "err_console", Console(file=err, width=300, color_system=None))
    return out, err


def test_the_run_summary_prints_hostile_sample_ids_and_paths(terminal):
    summary = RunSummary(
        kind="explain", run_id="3f2a", generation=0, status="completed_with_errors", model_ref="m", data_ref="d",
        methods=["chefer2021"], samples=2, explained=1, failed=1, maps=1, correct=0, labelled=0, shards=1,
        shards_skipped=0, shards_run=1, samples_computed=2, store=HOSTILE_PATH, paths={"store": HOSTILE_PATH},
        first_errors=[(HOSTILE_ID, "decode", "cannot read [red]x.png[/red]")], prefect_api="temporary local server")
    cli._print_summary(summary)
    out, err = (buffer.getvalue() for buffer in terminal)
    assert HOSTILE_PATH in out and "\x1b" not in out + err
    assert "sample [/x] bad \\x1b[2J[bold]id (decode): cannot read [red]x.png[/red]" in err
    assert f"attn-audit query --store {HOSTILE_PATH} " in err


def test_an_error_naming_a_path_with_brackets_prints_it_whole(terminal, tmp_path):
    store = tmp_path / "br[red]" / "store"
    assert cli.main(["evaluate", "--store", str(store), "--run", "x"]) == 1
    err = terminal[1].getvalue()
    assert err.startswith("error: ") and str(store) in err
