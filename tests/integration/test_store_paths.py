"""Store locations with any character the file system and deltalake allow: written, listed, queried and shown
there; the few that deltalake cannot write under are refused up front in one line naming the path."""

from __future__ import annotations

import re

import pytest
from attn_audit.flows import store_commands
from attn_audit.flows.cli import main
from attn_audit.storage.store import Store, StoreLocationError

from tests.integration.small_store import build_store

ODD_NAMES = ["with space", "ünï 码 ☃", "hash#and?query", "100%", "%zz%", "k=v", "(a){b}'c\"d&e;f!g@h$i`j~",
             "-dash\u00a0nbsp"]
UNUSABLE = {"[x]": "'[', ']'", "a^b": "'^'", "a|b": "'|'", "back\\slash": "'\\\\'", "tab\there": "'\\t'",
            "%41": "'%41'", "50%2F": "'%2F'"}


@pytest.mark.parametrize("name", ODD_NAMES)
def test_a_store_under_an_odd_path_is_written_read_queried_and_shown(tmp_path, capsys, monkeypatch, name):
    monkeypatch.setattr(store_commands.console, "width", 300)  # no folding of the run id
    location = tmp_path / name / "sub dir" / "store"
    store, run_id = build_store(location)
    assert store.uri == str(location.resolve())
    assert store.runs().num_rows == 1 and len(store.load_explanations(run_id)) == 10
    assert store.sql("SELECT count(*) AS n FROM explanations").to_pylist() == [{"n": 20}]
    again = Store.open(location.resolve().as_uri())  # the same place as a file:// URI (percent-encoded)
    assert again.uri == store.uri and again.sql("SELECT count(*) AS n FROM predictions").to_pylist() == [{"n": 5}]

    assert main(["runs", "--store", str(location)]) == 0
    assert run_id in capsys.readouterr().out
    assert main(["query", "--store", str(location), "--format", "csv", "SELECT count(*) AS n FROM errors"]) == 0
    assert capsys.readouterr().out.split() == ['"n"', "1"]
    page = tmp_path / name / "show.html"
    assert main(["show", "--store", str(location), "--run", run_id, "--sample", "s001", "--method", "chefer2021",
                 "--out", str(page)]) == 0
    assert page.is_file() and "w0" in capsys.readouterr().out


@pytest.mark.parametrize("name", list(UNUSABLE))
def test_a_path_deltalake_cannot_write_under_is_refused_in_one_line(tmp_path, capsys, name):
    location = tmp_path / name / "store"
    with pytest.raises(StoreLocationError, match=re.escape(f"holds {UNUSABLE[name]}, which deltalake")):
        Store.open(location, create=True)
    assert not (tmp_path / name).exists()
    assert main(["runs", "--store", str(location)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: a store cannot live at ") and len(err.strip().splitlines()) == 1


def test_a_link_to_an_unusable_folder_is_refused_by_what_it_points_to(tmp_path):
    target = tmp_path / "[x]"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(StoreLocationError, match=r"\[x\]"):
        Store.open(tmp_path / "link" / "store", create=True)
