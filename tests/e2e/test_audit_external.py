"""More machines, same command: a real `prefect server start` and a real `ray start --head` on loopback,
an audit run through both by the console script (PREFECT_API_URL / RAY_ADDRESS), both stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from attn_audit.storage.store import Store
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.e2e.test_audit_flow import stored_once, task_runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


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


def test_audit_through_an_external_prefect_server_and_ray_cluster(canvas_vit, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PREFECT_API_URL")}
    env.update(RAY_AUTH_MODE="disabled", PREFECT_HOME=str(tmp_path / "prefect-home"), DO_NOT_TRACK="1",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", COLUMNS="250")
    prefect_port, ray_port = free_port(), free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    prefect_log, ray_log = tmp_path / "prefect.log", tmp_path / "ray.log"
    prefect_cmd = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port),
                   "--no-ui", "--analytics-off"]
    ray_cmd = [str(BIN / "ray"), "start", "--head", "--port", str(ray_port), "--node-ip-address", "127.0.0.1",
               "--disable-usage-stats", "--include-dashboard=false", "--num-cpus", "2", "--block"]
    with service(prefect_cmd, env, prefect_log) as prefect_server, service(ray_cmd, env, ray_log) as ray_head:
        wait_until(lambda: "Ray runtime started" in ray_log.read_text(), ray_head, ray_log, "ray start")
        wait_until(lambda: healthy(api), prefect_server, prefect_log, "prefect server")
        store_path = tmp_path / "store"
        done = subprocess.run(
            [sys.executable, "-m", "attn_audit.flows.cli", "audit", "--model", str(canvas_vit), "--data",
             "builtin:fashion-canvas?n=24", "--methods", "chefer2021", "rollout", "--shard-size", "8",
             "--store", str(store_path), "--quiet"],
            cwd=ROOT, env={**env, "PREFECT_API_URL": api, "RAY_ADDRESS": f"127.0.0.1:{ray_port}"},
            capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"on {api}" in done.stdout and "completed" in done.stdout

        store = Store.open(store_path)
        (run,) = store.runs().to_pylist()
        assert run["status"] == "completed" and run["shards_committed"] == 3
        stored_once(store, run["run_id"], 24, ["chefer2021", "rollout"])
        with temporary_settings(updates={PREFECT_API_URL: api}):
            with get_client(sync_client=True) as client:
                (flow_run,) = client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"audit-{run['run_id']}"])))
            assert flow_run.state.is_completed()
            names = sorted(t.name for t in task_runs(flow_run.id))
        # one task for the shard phase, then the downstream jobs (evaluation, report) as tasks of the same flow run
        assert names == ["3 shards", "evaluate", "report"]
    for proc in (prefect_server, ray_head):
        assert proc.poll() is not None
