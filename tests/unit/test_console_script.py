"""The console script: `main`, then a normal exit, or for the commands that only read an immediate one (past the
interpreter's teardown, where pyarrow's dataset threads can abort the process)."""

import pytest
from attn_audit.flows import cli


class EndedAtOnce(Exception):
    pass


def immediate_exit(code):
    raise EndedAtOnce(code)


@pytest.mark.parametrize(("argv", "ending"), [
    (["runs", "--store", "s"], EndedAtOnce), (["--no-color", "query", "SELECT 1"], EndedAtOnce),
    (["methods"], EndedAtOnce), (["audit", "--model", "m"], SystemExit), (["store", "optimize"], SystemExit),
    (["report", "--run", "r"], SystemExit),
])
def test_only_the_read_only_commands_end_at_once(monkeypatch, argv, ending):
    monkeypatch.setattr(cli, "main", lambda args: 3)
    monkeypatch.setattr(cli.os, "_exit", immediate_exit)
    with pytest.raises(ending) as ended:
        cli.run_console_script(argv)
    assert ended.value.args == (3,)
