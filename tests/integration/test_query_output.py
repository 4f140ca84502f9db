"""What `attn-audit query` / `runs` print: stored text is never read as Rich markup nor passed to the terminal with
its control characters (csv / json / parquet keep them), list cells are readable; bad option values are
argparse's one-line errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
from attn_audit.flows import store_commands
from attn_audit.flows.cli import main

from tests.integration.small_store import build_store
from tests.integration.test_store import make_spec

ESCAPES = "\x1b[2J\x1b]0;owned\x07\r"  # clear the screen, retitle the window, bell, carriage return


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    def hostile_tokens(exps):
        for exp in exps:
            if exp.sample_id == "s000" and exp.method == "chefer2021":
                exp.tokens["text"] = ["[/x]", "[bold]loud", f"{ESCAPES}hidden", *exp.tokens["text"][3:]]
    return build_store(tmp_path_factory.mktemp("query_output") / "store", edit=hostile_tokens)[0]


def query(capsys, store, sql, *options) -> tuple[int, str, str]:
    code = main(["query", "--store", store.uri, *options, sql])
    out, err = capsys.readouterr()
    return code, out, err


HOSTILE = ("SELECT tokens FROM explanations WHERE sample_id = 's000' AND method = 'chefer2021' "
           "AND modality = 'text'")


def test_markup_in_values_and_column_names_prints_as_it_is(store, capsys):
    code, out, err = query(capsys, store, "SELECT '[/x]' AS a, '[red]b[/red]' AS \"[bold]c\"")
    assert code == 0 and err == ""
    assert "[/x]" in out and "[red]b[/red]" in out and "[bold]c" in out


def test_control_characters_never_reach_the_terminal(store, capsys):
    code, out, _ = query(capsys, store, HOSTILE)
    assert code == 0 and "[/x]" in out and "[bold]loud" in out and "hidden" in out
    assert not any(c in out for c in "\x1b\x07\r")
    code, out, _ = query(capsys, store, "SELECT chr(27) || '[31mred' || chr(7) AS v")
    assert code == 0 and "[31mred" in out and "\x1b" not in out and "\x07" not in out


def test_csv_json_and_parquet_keep_the_values_exactly(store, capsys, tmp_path):
    expected = ["[/x]", "[bold]loud", f"{ESCAPES}hidden"]
    _, out, _ = query(capsys, store, HOSTILE, "--format", "json")
    assert json.loads(out)[0]["tokens"][:3] == expected
    _, out, _ = query(capsys, store, HOSTILE.replace("SELECT tokens", "SELECT tokens[3] AS token"), "--format", "csv")
    assert ESCAPES in out
    target = tmp_path / "t.parquet"
    query(capsys, store, HOSTILE, "--format", "parquet", "--output", str(target))
    assert pq.read_table(target)["tokens"].to_pylist()[0][:3] == expected


def test_list_cells_show_their_first_items_and_length(store, capsys):
    code, out, _ = query(capsys, store, "SELECT ['great', 'film'] AS t, [0.5::FLOAT, 0.25] AS f, range(10) AS r")
    assert code == 0
    assert "[great, film]" in out and "[0.5, 0.25]" in out
    assert "[0, 1, 2, 3, 4, 5, …] (10)" in " ".join(out.replace("│", " ").split())


def test_runs_prints_stored_references_as_they_are(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(store_commands.console, "width", 250)  # no folding inside the references
    store, _ = build_store(tmp_path / "store")
    store.begin_run(replace(make_spec(n=2, seed="e"), model_ref=f"[bold]model{ESCAPES}",
                            dataset_ref="jsonl:[/x].jsonl"))
    assert main(["runs", "--store", store.uri]) == 0
    out = capsys.readouterr().out
    assert "[bold]model" in out and "jsonl:[/x].jsonl" in out and "\x1b" not in out and "\x07" not in out


@pytest.mark.parametrize("argv, message", [
    (["store", "vacuum", "--retention-hours", "-5"], "argument --retention-hours: must be 0 or more (got -5)"),
    (["store", "vacuum", "--retention-hours", "soon"], "argument --retention-hours: not a number: 'soon'"),
    (["query", "--timeout", "-1", "SELECT 1"], "argument --timeout: must be 0 or more (got -1)"),
    (["query", "--timeout", "nan", "SELECT 1"], "argument --timeout: must be 0 or more (got nan)"),
])
def test_negative_numbers_are_argparse_errors(store, capsys, argv, message):
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--store", store.uri])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and message in err and "Traceback" not in err
