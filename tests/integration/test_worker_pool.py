"""The worker pool's one retry policy (tasks.workers) on a real local Ray: a transient error is retried and then
passes, an input error is not retried, a worker killed mid-item has its item run again (on its restarted process, or
on a fresh actor when Ray gives up on it), progress reaches the caller while an item runs. The policy is the pool's
alone: the items here run on small actors that fail as told; the ExplainerActors of a real run are the last test."""

from __future__ import annotations

import os
import time

import pytest
import torch
import transformers
from attn_audit.flows.plan import model_fingerprint
from attn_audit.flows.ray_cluster import ray_session
from attn_audit.storage.datasets import CLASS_NAMES, DatasetError, open_dataset
from attn_audit.storage.store import RunSpec, Store
from attn_audit.tasks.actors import ExplainerConfig, Placement
from attn_audit.tasks.evaluate import evaluate_run
from attn_audit.tasks.explain_shard import ShardJob
from attn_audit.tasks.shards import plan_shards
from attn_audit.tasks.workers import ATTEMPTS, MAX_RESTARTS, WorkerPool, is_transient
from deltalake.exceptions import CommitFailedError
from ray.exceptions import ActorDiedError, RayTaskError

from tests.pool_workers import Item, new_worker
from tests.tiny_models import SMALL

pytestmark = pytest.mark.slow
DATA = "builtin:fashion-canvas?n=8"
RETRY_DELAYS_S = (0.2, 0.5)  # shorter than the pool's own; the policy is the same


@pytest.fixture(scope="module")
def local_ray():
    saved = os.environ.pop("RAY_ADDRESS", None)  # never a cluster of the developer's
    try:
        with ray_session(num_cpus=2):
            yield
    finally:
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


def pool_of(workers: int, max_restarts: int = 1, broken: str | None = None) -> WorkerPool:
    return WorkerPool(new_worker(max_restarts, broken), workers, poll_seconds=0.1, retry_delays=RETRY_DELAYS_S)


def by_key(outcomes) -> dict:
    return {o.item.key: o for o in outcomes}


def test_a_transient_error_is_retried_and_an_input_error_is_not(local_ray):
    items = [Item(0), Item(1, "store conflict"), Item(2, "input"), Item(3, "commit conflict")]
    with pool_of(2) as pool:
        started = time.monotonic()
        out = by_key(pool.run(items))
        seconds = time.monotonic() - started
    assert set(out) == {0, 1, 2, 3}
    assert (out[0].value[0], out[0].attempts, out[0].failed) == (0, 1, False)
    assert (out[1].value[0], out[1].attempts, out[1].failed) == (1, 2, False)  # failed once, then passed
    assert out[2].attempts == 1 and isinstance(out[2].error, ValueError)  # not retried
    assert isinstance(out[2].error, RayTaskError) and "bad input" in str(out[2].error)
    # retried, then given up; the class arrives as a copy (deltalake's does not pickle by reference): not
    # isinstance of CommitFailedError here, yet transient
    assert out[3].attempts == ATTEMPTS and "a concurrent transaction won" in str(out[3].error)
    assert not isinstance(out[3].error, CommitFailedError) and is_transient(out[3].error)
    assert seconds >= sum(RETRY_DELAYS_S)  # each retry waited its delay


def test_a_worker_killed_mid_item_has_it_run_again_and_its_progress_reported(local_ray):
    seen: list[tuple[int, int]] = []
    with pool_of(1) as pool:
        (first_pid,) = [i["pid"] for i in pool.infos]
        (outcome,) = pool.run([Item(7, "worker dies", steps=5)], on_progress=lambda k, done: seen.append((k, done)))
    assert not outcome.failed and outcome.attempts == 2
    key, pid = outcome.value
    assert key == 7 and pid != first_pid  # on the process Ray restarted
    restart = seen.index((7, 0), 1)  # the second attempt starts the count again from 0
    assert seen[0] == (7, 0) and {k for k, _ in seen} == {7}
    assert max(d for _, d in seen[:restart]) >= 1 and max(d for _, d in seen[restart:]) >= 1  # counted as it ran


def test_an_actor_ray_gave_up_on_is_replaced_and_its_item_runs_on_the_new_one(local_ray):
    with pool_of(1, max_restarts=0) as pool:
        (first_pid,) = [i["pid"] for i in pool.infos]
        outcomes = by_key(pool.run([Item(1, "worker dies", steps=4), Item(2), Item(3)]))
    assert {k: (o.failed, o.attempts) for k, o in outcomes.items()} == {1: (False, 2), 2: (False, 1), 3: (False, 1)}
    assert outcomes[1].value[1] != first_pid



def test_when_no_new_actor_starts_the_items_left_fail_with_the_reason(local_ray, tmp_path):
    broken = tmp_path / "broken"
    with pool_of(1, max_restarts=0, broken=str(broken)) as pool:
        broken.touch()  # every actor started from now on fails to load its model
        outcomes = by_key(pool.run([Item(1, "worker dies", steps=4), Item(2)]))
        assert pool._replacements == pool.max_replacements == MAX_RESTARTS
    assert {k: (o.failed, o.attempts) for k, o in outcomes.items()} == {1: (True, 1), 2: (True, 0)}
    assert all(isinstance(o.error, ActorDiedError) and is_transient(o.error) for o in outcomes.values())
    assert "cannot load the model" in str(outcomes[1].error)


@pytest.fixture(scope="module")
def canvas_run(tmp_path_factory):
    """A tiny stock ViT for builtin:fashion-canvas and a store with a run of 8 positions begun on it."""
    root = tmp_path_factory.mktemp("pool")
    config = transformers.ViTConfig(image_size=64, patch_size=16, num_channels=1,
                                    id2label=dict(enumerate(CLASS_NAMES)), **SMALL)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).eval().save_pretrained(root / "vit")
    store = Store.open(root / "store", create=True)
    model_ref, dataset = str(root / "vit"), open_dataset(DATA)
    run = store.begin_run(RunSpec(model_ref, model_fingerprint(model_ref), dataset.ref, dataset.fingerprint(),
                                  ("rollout",), {"target": "predicted"}, num_samples=8, shard_size=4))
    return model_ref, store, run


def test_explainer_actors_commit_and_evaluate_and_a_bad_dataset_is_not_retried(local_ray, canvas_run):
    """The pool of a real run: a shard explained and committed by an actor, one whose dataset cannot be opened
    failed at once, then the evaluation of the committed shard on the same actors (ChunkItems, same path)."""
    model_ref, store, run = canvas_run
    placement = Placement(workers=2, num_cpus=1.0, num_gpus=0.0, threads=1)
    good = ShardJob(run.run_id, DATA, ("rollout",), batch_size=4)
    bad = ShardJob(run.run_id, "imagefolder:/nonexistent/folder", ("rollout",), batch_size=4)
    first, second = plan_shards(8, 4)
    with WorkerPool.of_explainers(placement, ExplainerConfig(model_ref, store.uri, device="cpu")) as pool:
        writers = {f"{i['host']}:{i['pid']}" for i in pool.infos}
        (done,) = pool.explain(good, [first])
        (failed,) = pool.explain(bad, [second])
        evaluated = evaluate_run(store, run.run_id, device="cpu", pool=pool)
    assert not done.failed and done.value.computed and done.value.writer in writers
    assert store.committed_shards(run.run_id) == {0}
    assert failed.attempts == 1 and isinstance(failed.error, DatasetError)
    assert (evaluated.chunks, evaluated.chunks_skipped, evaluated.samples) == (1, 0, 4)
    chunk_writers = {c["attn_audit_writer"] for c in store.delta("metrics").history() if "attn_audit_writer" in c}
    assert chunk_writers & writers  # committed by an actor, not by this process
