"""Scheduled audits and checkpoint reruns for real: a `prefect server start` and a `ray start --head` on loopback
(the session's, tests/e2e/servers.py), deploy/serve.py serving the audit on a short interval and the checkpoint
watcher with RAY_ADDRESS set; a scheduled run lands in the store, then a new checkpoint (builtin:fashion-vit with
perturbed weights) dropped into the watched folder is audited on the same samples and compared. Every process is
stopped by its PID."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from attn_audit.models.zoo import builtin_path
from attn_audit.storage.store import Store
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings
from safetensors.numpy import load_file, save_file

from tests.e2e.servers import ROOT, service, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLES = 8


def drop_checkpoint(folder: Path, name: str, seed: int, scale: float = 0.02) -> Path:
    """builtin:fashion-vit with Gaussian noise on every weight, written in a hidden folder then renamed into
    view (how a training job should publish a checkpoint: the watcher never sees half of one)."""
    staging, final = folder / f".{name}", folder / name
    shutil.copytree(builtin_path("fashion-vit"), staging)
    weights = load_file(staging / "model.safetensors")
    rng = np.random.default_rng(seed)
    save_file({k: v + rng.normal(0, scale, v.shape).astype(v.dtype) if v.dtype.kind == "f" else v
               for k, v in weights.items()}, staging / "model.safetensors")
    staging.rename(final)
    return final


def finished_runs(store_path: Path) -> list[dict]:
    if not (store_path / "runs").is_dir():
        return []
    runs = Store.open(store_path).runs().to_pylist()
    return [r for r in runs if r["status"] in ("completed", "completed_with_errors")]


def test_served_schedule_audits_and_the_watcher_compares_a_new_checkpoint(external_servers, tmp_path):
    api = external_servers.api
    store_path, watched = tmp_path / "store", tmp_path / "checkpoints"
    watched.mkdir()
    serve_cmd = [sys.executable, str(ROOT / "deploy" / "serve.py"), "--model", "builtin:fashion-vit",
                 "--data", "builtin:fashion-canvas", "--limit", str(SAMPLES), "--methods", "chefer2021",
                 "--store", str(store_path), "--interval", "5", "--watch", str(watched), "--watch-interval", "5"]
    serve_log = tmp_path / "serve.log"
    serve_env = external_servers.client_env(OMP_NUM_THREADS="1", PREFECT_RUNNER_POLL_FREQUENCY="2")
    started = time.monotonic()
    with service(serve_cmd, serve_env, serve_log) as served:
        wait_until(lambda: finished_runs(store_path), served, serve_log, "the scheduled audit", timeout=240)
        (baseline,) = finished_runs(store_path)
        print(f"\nscheduled run in the store after {time.monotonic() - started:.0f} s")
        pause(api, "nightly")  # one scheduled audit is enough: more would only compete for the 2 cores
        checkpoint = drop_checkpoint(watched, "step-2", seed=1)
        wait_until(lambda: len(finished_runs(store_path)) == 2 and comparison_artifact(api, store_path), served,
                   serve_log, "the watcher's audit, comparison and its artifact", timeout=240)
        print(f"comparison in the store after {time.monotonic() - started:.0f} s")
        pause(api, "checkpoints")  # then let the flow runs under way end, so that stopping cancels none
        wait_until(lambda: not child_processes(served.pid), served, serve_log, "the last flow runs", timeout=60)
    assert served.poll() is not None
    check_prefect(api, store_path)

    store = Store.open(store_path)
    assert baseline["model_ref"] == "builtin:fashion-vit" and baseline["num_samples"] == SAMPLES
    (run,) = [r for r in finished_runs(store_path) if r["run_id"] != baseline["run_id"]]
    assert run["model_ref"] == str(checkpoint) and run["model_fingerprint"] != baseline["model_fingerprint"]
    assert (run["dataset_ref"], run["num_samples"], list(run["methods"])) == (
        baseline["dataset_ref"], SAMPLES, ["chefer2021"])

    def sample_ids(run_id):
        return sorted(store.predictions(run_id=run_id, columns=["sample_id"])["sample_id"].to_pylist())
    assert sample_ids(run["run_id"]) == sample_ids(baseline["run_id"]) and len(sample_ids(run["run_id"])) == SAMPLES

    rows = store.table("comparisons", run_id=run["run_id"]).to_pylist()
    assert {r["baseline_run_id"] for r in rows} == {baseline["run_id"]}
    rho = [r["value"] for r in rows if r["kind"] == "sample" and r["metric"] == "spearman"]
    assert len(rho) == SAMPLES and all(-1 <= v <= 1 for v in rho)
    assert min(rho) < 1.0  # perturbed weights move the maps
    assert any(r["kind"] == "metric_delta" for r in rows)  # both runs were evaluated before the comparison
    report = (store_path.parent / "reports" / run["run_id"] / "index.html").read_text()
    assert f"Compared with run {baseline['run_id']}" in report


def check_prefect(api: str, store_path: Path) -> None:
    """The served deployments with their schedules, and the comparison's artifact on the watcher's flow run."""
    entrypoints = {"nightly": "flows/audit.py:audit", "checkpoints": "flows/watch.py:watch_checkpoints"}
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        for name, entrypoint in entrypoints.items():
            (deployment,) = client.read_deployments(
                deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])))
            assert deployment.schedules and deployment.entrypoint.endswith(entrypoint)
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(
                any_=[deployment.id])), flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))))
            assert runs and all(r.auto_scheduled for r in runs)  # started by the schedule, not by hand
    assert "spearman" in comparison_artifact(api, store_path).data  # its flow run ended Completed


def child_processes(pid: int) -> list[str]:
    """The serving process's children (its flow runs' processes), from /proc."""
    return [c for f in Path(f"/proc/{pid}/task").glob("*/children") for c in f.read_text().split()]


def pause(api: str, deployment: str) -> None:
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        (found,) = client.read_deployments(deployment_filter=DeploymentFilter(name=DeploymentFilterName(
            any_=[deployment])))
        client.pause_deployment(found.id)


def comparison_artifact(api: str, store_path: Path):
    """The watcher's markdown artifact of the stored comparison, once the watcher's flow run that made it has
    completed; else None."""
    pairs = Store.open(store_path).table("comparisons", columns=["run_id", "baseline_run_id"]).slice(0, 1).to_pylist()
    if not pairs:
        return None
    key = f"compare-{pairs[0]['run_id']}-{pairs[0]['baseline_run_id']}"
    with temporary_settings(updates={PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
        done = found and client.read_flow_run(found[0].flow_run_id).state.is_completed()
    return found[0] if done else None
