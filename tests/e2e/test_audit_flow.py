"""The audit / explain flows end to end: real Prefect (one test server), real Ray (one local cluster), real
store. Shards are small so that a run has several; the model is a tiny stock ViT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from attn_audit.flows.audit import run_audit
from attn_audit.flows.cli import main
from attn_audit.flows.downstream import Downstream
from attn_audit.flows.explain_cmd import run_explain
from attn_audit.flows.request import AuditRequest
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from attn_audit import models

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
METHODS = models.default_methods()


def request(model, data, store, **kw) -> AuditRequest:
    return AuditRequest(model=str(model), data=data, methods=kw.pop("methods", METHODS), store=str(store), **kw)


def stored_once(store: Store, run_id: str, n: int, methods=METHODS) -> None:
    """Every sample exactly once in predictions, once per method in explanations."""
    preds = store.predictions(run_id=run_id, columns=["sample_id"])["sample_id"].to_pylist()
    assert len(preds) == n and len(set(preds)) == n
    keys = store.explanations(run_id=run_id, columns=["sample_id", "method"]).to_pylist()
    assert len(keys) == n * len(methods)
    assert Counter((k["sample_id"], k["method"]) for k in keys).most_common(1)[0][1] == 1


def task_runs(flow_run_id):
    with get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))


def test_audit_stores_every_sample_once_with_the_engines_maps(canvas_vit, ray_cluster, prefect_api, tmp_path):
    data = "builtin:fashion-canvas?n=40"
    s = run_audit(request(canvas_vit, data, tmp_path / "store", shard_size=16, batch_size=8), progress=False,
                  downstream=Downstream(jobs=("report",)))  # the downstream jobs are a parameter of the flow
    assert (s.status, s.samples, s.explained, s.failed, s.shards, s.shards_run) == ("completed", 40, 40, 0, 3, 3)
    report = tmp_path / "reports" / s.run_id / "index.html"
    assert s.paths["report"] == str(report) and report.is_file()
    store = Store.open(tmp_path / "store")
    stored_once(store, s.run_id, 40)
    (run,) = store.runs().to_pylist()
    assert run["status"] == "completed" and run["shards_committed"] == 3 and run["methods"] == METHODS
    # Each shard was committed by a Ray worker process, not by the flow's process.
    writers = {r["writer"] for r in store.shards(s.run_id).to_pylist()}
    assert writers and all(not w.endswith(f":{os.getpid()}") for w in writers)

    # The stored maps are what models.explain gives for the same samples (same batches as the workers).
    m = models.load(str(canvas_vit), device="cpu")
    dataset = open_dataset(data)
    stored = {(e.sample_id, e.method): e for e in store.load_explanations(s.run_id)}
    for lo in range(0, 40, 8):
        direct = models.explain(m, m.preprocess([dataset[i] for i in range(lo, lo + 8)]), method=METHODS)
        for exp in direct:
            np.testing.assert_allclose(stored[exp.sample_id, exp.method].relevance["image"],
                                       exp.relevance["image"], atol=1e-6)

    # Prefect: one completed task for the shard phase, named by its count, then the downstream job; artifacts.
    runs = {t.name: t for t in task_runs(s.flow_run_id)}
    assert set(runs) == {"3 shards", "report"}
    assert all(t.state.is_completed() and t.run_count == 1 for t in runs.values())
    assert runs["3 shards"].end_time <= runs["report"].start_time  # after the shards
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(s.flow_run_id).state.is_completed()
        keys = {a.key for a in client.read_artifacts()}
    assert {f"audit-{s.run_id}", f"audit-{s.run_id}-shards"} <= keys

    # The same audit again: nothing to compute (Ray is not even needed), nothing rewritten.
    again = run_audit(request(canvas_vit, data, tmp_path / "store", shard_size=16), progress=False)
    assert (again.run_id, again.shards_skipped, again.shards_run, again.status) == (s.run_id, 3, 0, "completed")
    assert again.placement == "" and store.predictions().num_rows == 40


def test_bad_samples_go_to_errors_and_the_rest_is_stored(image_world, ray_cluster, prefect_api, tmp_path, capsys):
    """Through the CLI's main() in this process: a corrupt image among good ones."""
    store_path = tmp_path / "store"
    code = main(["explain", "--model", str(image_world / "vit"), "--data", f"imagefolder:{image_world / 'images'}",
                 "--methods", "chefer2021,rollout", "--shard-size", "4", "--batch-size", "2", "--store",
                 str(store_path), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    store = Store.open(store_path)
    (run,) = store.runs().to_pylist()
    assert (run["status"], run["num_samples"], run["explained"], run["failed"]) == ("completed_with_errors", 6, 5, 1)
    errors = store.errors(run_id=run["run_id"]).to_pylist()
    assert [(e["sample_id"], e["stage"]) for e in errors] == [("beta/corrupt.png", "decode")]
    assert store.explanations(run_id=run["run_id"]).num_rows == 5 * 2
    assert "completed_with_errors" in out and "corrupt.png" in err
    assert f"attn-audit query --store {store_path}" in err and "FROM errors" in err  # where to look


def test_an_interrupted_run_resumes_only_its_missing_shards_and_force_recomputes(
        canvas_vit, ray_cluster, prefect_api, tmp_path):
    data, n, shard = "builtin:fashion-canvas?n=96", 96, 8  # 12 shards
    store_path = tmp_path / "store"
    store = Store.open(store_path, create=True)
    args = ["explain", "--model", str(canvas_vit), "--data", data, "--method", "chefer2021", "--shard-size",
            str(shard), "--batch-size", "4", "--workers", "1", "--store", str(store_path), "--quiet"]
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.address, "PREFECT_API_URL": prefect_api}
    proc = subprocess.Popen([sys.executable, "-m", "attn_audit.flows.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            runs = store.runs()
            if runs.num_rows and len(store.committed_shards(runs["run_id"][0].as_py())) >= 3:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # the flow's process dies mid-run: no cleanup of any kind
        proc.wait()
    run_id = store.runs()["run_id"][0].as_py()
    before = {r["shard_id"]: (r["committed_at"], r["writer"]) for r in store.shards(run_id).to_pylist()}
    assert 3 <= len(before) < 12

    resumed = run_audit(request(canvas_vit, data, store_path, methods=["chefer2021"], shard_size=shard,
                                batch_size=4, workers=1), kind="explain", progress=False)
    assert resumed.run_id == run_id and resumed.status == "completed"
    assert (resumed.shards_skipped, resumed.shards_run) == (len(before), 12 - len(before))
    after = {r["shard_id"]: (r["committed_at"], r["writer"]) for r in store.shards(run_id).to_pylist()}
    assert sorted(after) == list(range(12)) and store.shards(run_id).num_rows == 12
    assert all(after[k] == v for k, v in before.items())  # earlier commits untouched
    stored_once(store, run_id, n, ["chefer2021"])
    pending = 12 - len(before)
    assert [t.name for t in task_runs(resumed.flow_run_id)] == [f"{pending} shard{'s' if pending != 1 else ''}"]

    # --force: every shard again, as generation 1 (a new run id); generation 0 stays as it was.
    forced = run_audit(request(canvas_vit, data, store_path, methods=["chefer2021"], shard_size=shard,
                               batch_size=4, force=True, workers=1), kind="explain", progress=False)
    assert forced.run_id != run_id and forced.generation == 1 and forced.shards_run == 12
    assert json.loads(store.run(forced.run_id).config)["generation"] == 1
    stored_once(store, forced.run_id, n, ["chefer2021"])
    stored_once(store, run_id, n, ["chefer2021"])
    assert {r["shard_id"]: (r["committed_at"], r["writer"]) for r in store.shards(run_id).to_pylist()} == after
    # A plain rerun now resumes the latest generation (complete: nothing to do); through run_explain, the
    # Python form of `attn-audit explain`.
    latest = run_explain(str(canvas_vit), data, ["chefer2021"], store_path, shard_size=shard, progress=False)
    assert (latest.run_id, latest.shards_run) == (forced.run_id, 0)


def test_a_worker_killed_mid_shard_ends_with_every_sample_stored_once(canvas_vit, ray_cluster, prefect_api,
                                                                      tmp_path):
    import ray

    data, n = "builtin:fashion-canvas?n=48", 48
    names_before = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)}
    killed: dict = {}

    def kill_the_worker_after_its_first_batch():
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not killed:
            for entry in ray.util.list_named_actors(all_namespaces=True):
                if entry["name"] in names_before:
                    continue
                actor = ray.get_actor(entry["name"], namespace=entry["namespace"])
                try:
                    shard, done = ray.get(actor.progress.remote(), timeout=10)
                    if shard is not None and done >= 2:  # inside a shard, after its first batch
                        pid = ray.get(actor.info.remote(), timeout=10)["pid"]
                        os.kill(pid, signal.SIGKILL)
                        killed.update(pid=pid, shard=shard, done=done)
                        return
                except ray.exceptions.RayError:  # still loading the model
                    pass
            time.sleep(0.02)

    killer = threading.Thread(target=kill_the_worker_after_its_first_batch, daemon=True)
    killer.start()
    s = run_audit(request(canvas_vit, data, tmp_path / "store", methods=["chefer2021", "rollout"], shard_size=24,
                          batch_size=2), kind="explain", progress=False)
    killer.join(timeout=5)
    assert killed, "the worker was never caught mid-shard"
    assert s.status == "completed" and s.explained == n and s.shards_run == 2
    store = Store.open(tmp_path / "store")
    stored_once(store, s.run_id, n, ["chefer2021", "rollout"])
    shards = {r["shard_id"]: r["writer"] for r in store.shards(s.run_id).to_pylist()}
    assert sorted(shards) == [0, 1]
    assert not shards[killed["shard"]].endswith(f":{killed['pid']}")  # committed by the restarted worker
    # The pool ran that shard once more (its second attempt waited for Ray to restart the worker), and only that
    # one; no Prefect task was retried (the pool's policy is the only one).
    lo = killed["shard"] * 24
    assert s.retried == {f"shard-{killed['shard']:04d} [{lo}:{lo + 24})": 2}
    assert [(t.name, t.run_count) for t in task_runs(s.flow_run_id)] == [("2 shards", 1)]


def test_the_evaluation_runs_on_the_runs_ray_actors(canvas_vit, ray_cluster, prefect_api, tmp_path):
    """The downstream evaluation of an audit: every chunk's perturbation and localisation results are committed
    by the actors that explained the shards (they hold the model), each sample's AUC exactly once."""
    s = run_audit(request(canvas_vit, "builtin:fashion-canvas?n=24", tmp_path / "store", shard_size=8,
                          methods=["chefer2021", "rollout"]), progress=False,
                  downstream=Downstream(jobs=("evaluate",)))
    assert s.status == "completed" and s.shards_run == 3
    store = Store.open(tmp_path / "store")
    metrics = store.metrics(run_id=s.run_id).to_pylist()
    per_sample = Counter((r["method"], r["sample_id"]) for r in metrics
                         if r["metric"] == "auc_positive" and r["sample_id"] is not None)
    assert len(per_sample) == 2 * 24 and set(per_sample.values()) == {1}
    assert {r["metric"] for r in metrics} >= {"auc_negative", "bmeq_otsu", "auprc"}
    writers = {c["attn_audit_writer"] for c in store.delta("metrics").history() if "attn_audit_writer" in c}
    chunk_writers = writers - {f"{os.uname().nodename}:{os.getpid()}"}  # the aggregate rows come from the flow
    assert len(chunk_writers) >= 1 and writers & {r["writer"] for r in store.shards(s.run_id).to_pylist()}
