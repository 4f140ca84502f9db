"""More machines, same command: an audit run by the console script through a real `prefect server start` and a
real `ray start --head` on loopback (PREFECT_API_URL / RAY_ADDRESS; the session's, tests/e2e/servers.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from attn_audit.storage.store import Store
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.e2e.servers import ROOT
from tests.e2e.test_audit_flow import stored_once, task_runs

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_audit_through_an_external_prefect_server_and_ray_cluster(canvas_vit, external_servers, tmp_path):
    api = external_servers.api
    store_path = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-m", "attn_audit.flows.cli", "audit", "--model", str(canvas_vit), "--data",
         "builtin:fashion-canvas?n=24", "--methods", "chefer2021", "rollout", "--shard-size", "8",
         "--store", str(store_path), "--quiet"],
        cwd=ROOT, env=external_servers.client_env(COLUMNS="250"), capture_output=True, text=True, timeout=300)
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
