"""Prefect for one machine with nothing started by hand, or the Prefect server named by PREFECT_API_URL.

- No PREFECT_API_URL: the first flow starts Prefect's temporary local server (a SQLite database under
  ~/.prefect, stopped when the process ends, even by SIGKILL: flows.temporary_server). Its start-up
  timeout is raised to 90 s (a fresh database on a busy 2-core machine takes longer than the default
  20 s), its analytics are off (they only add "database is locked" noise; the client's telemetry too:
  DO_NOT_TRACK=1 unless exported), and flow heartbeats are off (nobody watches for crashed runs on a
  server that ends with the process, and each flow would wait 1 s for the heartbeat thread).
- PREFECT_API_URL set: flows, task states and artifacts go to that server; heartbeats stay on.
- Prefect's log lines are hidden in the terminal unless --verbose (its console handler is set to
  CRITICAL; the CLI prints its own summary and errors); the Prefect API still receives the flow and task
  run logs, so the UI shows every state, retry and traceback.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

STARTUP_TIMEOUT_S = 90


def configure_environment(verbose: bool = False) -> None:
    """Set Prefect's environment defaults; call before Prefect is first imported (its logging is configured
    on import). Values the user exported win."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client telemetry (and its first-run notice)
    current = os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "")
    if not current.isdigit() or int(current) < STARTUP_TIMEOUT_S:
        os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = str(STARTUP_TIMEOUT_S)
    # Prefect's console handler only: flow and task run logs still reach the Prefect API (the UI shows them)
    if verbose:
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "INFO"
    else:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")


def api_url() -> str | None:
    """The Prefect server flows report to; None means the temporary local server."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


@contextmanager
def prefect_session():
    """Settings for the flows run inside: see the module docstring. Yields the API URL (None = temporary
    local server)."""
    from prefect.settings import (
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    url = api_url()
    if url is None:
        from attn_audit.flows.temporary_server import supervise

        supervise()  # the server ends with this process, even when it is SIGKILLed
    updates = {PREFECT_SERVER_ANALYTICS_ENABLED: False,
               PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:
                   max(STARTUP_TIMEOUT_S, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())}
    if url is None:
        updates[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    with temporary_settings(updates=updates):
        yield url
