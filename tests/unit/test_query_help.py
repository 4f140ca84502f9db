"""`attn-audit query --help` names every view a query can read (issue 18: it had drifted from the store)."""

import contextlib

from attn_audit.flows.cli import build_parser
from attn_audit.storage.store import Store
from attn_audit.storage.store.layout import TABLES

VIEWS = "SELECT table_name FROM information_schema.tables WHERE table_type = 'VIEW'"


def test_query_help_lists_every_view_of_a_store(tmp_path, capsys):
    views = [v for v in Store.open(tmp_path / "store", create=True).sql(VIEWS).column(0).to_pylist()
             if not v.startswith("_")]  # _arrow_*: the Arrow datasets the views read
    assert set(views) == set(TABLES)
    with contextlib.suppress(SystemExit):
        build_parser().parse_args(["query", "--help"])
    described = " ".join(capsys.readouterr().out.split())
    assert all(f" {name}," in described or f" {name} (" in described for name in views), described
