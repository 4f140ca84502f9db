"""Signals to the real `attn-audit explain` once Prefect's temporary server runs: SIGTERM ends the command as
Ctrl-C does (exit 130, the interrupted message); after either SIGTERM or SIGKILL (no cleanup of any kind in
the command) the server is gone within seconds."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def _within(seconds: float, condition):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.1)
    return None


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signalled_explain_leaves_no_prefect_server_running(ray_cluster, tmp_path, sig):
    env = {**{k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}, "RAY_ADDRESS": ray_cluster.address}
    stderr = tmp_path / "stderr.txt"  # a file, not a pipe: the server inherits the command's output
    with stderr.open("w") as err:
        cli = subprocess.Popen([sys.executable, "-m", "attn_audit.flows.cli", "explain", "--model",
                                "builtin:fashion-vit",
                                "--data", "builtin:fashion-canvas", "--limit", "200", "--store",
                                str(tmp_path / "store"), "--quiet"], env=env, stdout=subprocess.DEVNULL, stderr=err)
    server = None
    try:
        server = _within(180, lambda: next((p for p in _children(cli.pid) if "uvicorn" in _command(p)), None))
        assert server, "no Prefect server started"
        cli.send_signal(sig)
        cli.wait(timeout=60)
        assert _within(15, lambda: not _alive(server)), f"the Prefect server (pid {server}) outlived the command"
    finally:
        cli.kill()
        if server and _alive(server):
            os.kill(server, signal.SIGKILL)
    if sig == signal.SIGTERM:
        assert cli.returncode == 130 and "interrupted" in stderr.read_text(), stderr.read_text()[-2000:]
