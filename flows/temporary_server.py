"""Prefect's temporary server, made to end with the process that started it.

Prefect starts its temporary server (`SubprocessASGIServer`, on the first flow without PREFECT_API_URL) as a
uvicorn child process and stops it from an atexit hook, which never runs when that process is SIGKILLed (the
OOM killer, `kill -9`, a CI timeout): the server would keep running. `supervise()` has Prefect start the same
server (same command, environment and health check) through `create_app` below, which first starts a thread
that ends the server as soon as its parent process is gone. A thread in the server, rather than Linux's
PR_SET_PDEATHSIG: that signal follows the *thread* that started the child, and Prefect may start it from any.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import get_current_settings

PARENT_ENV = "ATTN_AUDIT_SERVER_PARENT"  # the process the server must not outlive
POLL_S = 0.5
SHUTDOWN_GRACE_S = 10  # uvicorn's graceful shutdown, after which the server exits hard


def create_app():
    """uvicorn's app factory in the server process: Prefect's API, watched by an orphan check."""
    threading.Thread(target=_end_when_orphaned, args=(int(os.environ[PARENT_ENV]),), daemon=True,
                     name="attn-audit-orphan-check").start()
    from prefect.server.api.server import create_app as prefect_app

    return prefect_app()


def _end_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:  # a dead parent's children are adopted by init (or a subreaper)
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down as on `kill`
    time.sleep(SHUTDOWN_GRACE_S)
    os._exit(1)


class _OrphanSafeServer(SubprocessASGIServer):
    def _run_uvicorn_command(self) -> subprocess.Popen:
        # Prefect 3.9's command (SubprocessASGIServer._run_uvicorn_command) with this module's factory
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(Path(__file__).resolve().parents[1]), "--factory",
             f"{__name__}:create_app", "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "error",
             "--lifespan", "on"],
            env={**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
                 "PREFECT__SERVER_FINAL": "1", **get_current_settings().to_environment_variables(exclude_unset=True),
                 PARENT_ENV: str(os.getpid())})


def supervise() -> None:
    """Make the temporary server this process's flows use end with this process. Prefect keeps one server
    instance per process (`SubprocessASGIServer()` returns it); this files the orphan-safe one first, still
    started only when a flow needs it. A server already started in this process is left as it is."""
    _OrphanSafeServer()
