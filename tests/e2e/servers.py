"""A real `prefect server start` and a real `ray start --head` on loopback, as a team runs them for scheduled
audits and shared clusters; started as processes of their own session and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@dataclass
class Servers:
    api: str  # PREFECT_API_URL of the server
    ray_address: str  # RAY_ADDRESS of the head
    env: dict  # this environment without RAY_ADDRESS / PREFECT_API_URL, with the servers' PREFECT_HOME

    def client_env(self, **extra) -> dict:
        """The environment of a process that uses both servers."""
        return {**self.env, "PREFECT_API_URL": self.api, "RAY_ADDRESS": self.ray_address, **extra}


@contextmanager
def servers(folder: Path):
    """Both servers, up and healthy; at the end both stopped by their PIDs, and checked gone."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PREFECT_API_URL")}
    env.update(RAY_AUTH_MODE="disabled", PREFECT_HOME=str(folder / "prefect-home"), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false")
    prefect_port, ray_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    prefect_log, ray_log = folder / "prefect.log", folder / "ray.log"
    prefect_cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port),
                   "--no-ui", "--analytics-off"]
    ray_cmd = [str(BIN / "ray"), "start", "--head", "--port", str(ray_port), "--node-ip-address", "127.0.0.1",
               "--disable-usage-stats", "--include-dashboard=false", "--num-cpus", "2", "--block"]
    with service(prefect_cmd, env, prefect_log) as prefect_server, service(ray_cmd, env, ray_log) as ray_head:
        wait_until(lambda: "Ray runtime started" in ray_log.read_text(), ray_head, ray_log, "ray start")
        wait_until(lambda: healthy(api), prefect_server, prefect_log, "prefect server")
        yield Servers(api, f"127.0.0.1:{ray_port}", env)
    assert prefect_server.poll() is not None and ray_head.poll() is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def service(cmd: list[str], env: dict, log: Path):
    """Start a server in its own session; stop it by its PID (SIGTERM: both servers stop their children),
    then its process group if anything of it is left."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test created: leftovers only


def wait_until(check, proc, log: Path, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"{what} not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
