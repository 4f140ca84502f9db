"""Shard plans and actor placement: pure functions, no Ray running."""

import math

import pytest
from attn_audit.tasks.actors import MAX_WORKERS_PER_CPU, error_line, place_run, plan_placement
from attn_audit.tasks.shards import Shard, auto_shard_size, max_shards, pending_shards, plan_shards

from attn_audit import models


def test_shards_are_contiguous_and_cover_every_position_once():
    shards = plan_shards(10, 4)
    assert shards == [Shard(0, 0, 4), Shard(1, 4, 8), Shard(2, 8, 10)]
    assert shards[2].name == "shard-0002 [8:10)" and shards[2].size == 2
    assert plan_shards(0, 4) == [] and [s.id for s in pending_shards(shards, {0, 2})] == [1]
    with pytest.raises(ValueError):
        plan_shards(10, 0)


def test_cpu_placement_fits_the_cores():
    p = plan_placement([{"CPU": 2.0}])  # one single-threaded actor per core
    assert (p.workers, p.num_cpus, p.num_gpus, p.threads) == (2, 1.0, 0.0, 1)
    assert plan_placement([{"CPU": 16.0}, {"CPU": 0.0}]).workers == 16
    p = plan_placement([{"CPU": 16.0}], max_workers=4)  # no more actors than shards
    assert (p.workers, p.num_cpus, p.threads) == (4, 1.0, 1)
    p = plan_placement([{"CPU": 2.0}], workers=1)
    assert (p.workers, p.num_cpus, p.threads) == (1, 2.0, 2)
    p = plan_placement([{"CPU": 2.0}], workers=4)  # more actors than cores: fractions of a CPU
    assert (p.workers, p.num_cpus, p.threads) == (4, 0.5, 1)
    p = plan_placement([{"CPU": 4.0}, {"CPU": 3.0}], workers=3)  # must fit node by node: 2 + 1
    assert (p.workers, p.num_cpus) == (3, 2.0)
    assert plan_placement([{"CPU": 3.0}], workers=2).num_cpus == 1.0  # Ray takes fractions only below 1


def test_gpu_placement_only_with_gpus_and_never_more_than_they_hold():
    p = plan_placement([{"CPU": 16.0, "GPU": 2.0}])
    assert (p.workers, p.num_gpus, p.num_cpus) == (2, 1, 1.0)
    assert plan_placement([{"CPU": 16.0, "GPU": 2.0}], gpus_per_worker=0.5).workers == 4
    assert plan_placement([{"CPU": 16.0, "GPU": 2.0}], device="cpu").num_gpus == 0
    with pytest.raises(models.AttnAuditError, match="no GPUs"):
        plan_placement([{"CPU": 2.0}], device="cuda")
    with pytest.raises(models.AttnAuditError, match="do not fit"):
        plan_placement([{"CPU": 2.0, "GPU": 1.0}], workers=2)
    with pytest.raises(models.AttnAuditError, match="no node"):
        plan_placement([{"CPU": 8.0, "GPU": 1.0}, {"CPU": 8.0, "GPU": 1.0}], gpus_per_worker=2)
    with pytest.raises(models.AttnAuditError, match="whole number"):
        plan_placement([{"CPU": 8.0, "GPU": 4.0}], gpus_per_worker=1.5)


def test_error_line_keeps_the_message_of_the_error_behind():
    ray_text = "Traceback (most recent call last):\n  File \"x.py\", line 1\n" \
               "models.errors.ModelLoadError: cannot load 'x'"
    assert error_line(RuntimeError(ray_text)) == "ModelLoadError: cannot load 'x'"
    assert error_line(ValueError("plain")) == "plain"


def test_a_worker_count_the_cluster_cannot_hold_is_capped_and_says_why():
    p = plan_placement([{"CPU": 2.0}], workers=50)  # was 50 processes each loading the model
    assert p.workers == 2 * MAX_WORKERS_PER_CPU and "--workers 50 capped to 4" in p.describe()
    gib = 2 ** 30
    p = plan_placement([{"CPU": 16.0, "memory": 3 * gib}], workers=8, worker_bytes=1 * gib)
    assert p.workers == 3 and "3.0 GiB of memory hold 3 workers" in p.note
    assert plan_placement([{"CPU": 16.0, "memory": 3 * gib}], worker_bytes=gib).workers == 3  # the default too
    assert plan_placement([{"CPU": 2.0}], workers=3).note == ""


def test_only_what_can_succeed_on_a_second_try_is_retried():
    from attn_audit.storage.datasets import DatasetError
    from attn_audit.storage.store import StoreConflictError
    from attn_audit.tasks.workers import is_transient
    from deltalake.exceptions import CommitFailedError
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayTaskError

    def raised_in_a_worker(err):
        return RayTaskError("run_shard", "Traceback ...", err).as_instanceof_cause()

    for transient in (ActorDiedError(), ActorUnavailableError("restarting", None),
                      StoreConflictError("too many concurrent writers"),
                      raised_in_a_worker(CommitFailedError("conflict")), raised_in_a_worker(ConnectionError("reset"))):
        assert is_transient(transient), transient
    for deterministic in (IndexError("list index out of range"), raised_in_a_worker(IndexError("x")),
                          models.AttnAuditError("bad target"), raised_in_a_worker(DatasetError("bad file")),
                          raised_in_a_worker(ValueError("bad config"))):
        assert not is_transient(deterministic), deterministic


def test_a_failed_run_says_what_failed_and_whether_running_again_helps():
    from attn_audit.flows.audit import _failure_message
    from attn_audit.storage.store import StoreConflictError
    from attn_audit.tasks.explain_shard import ShardJob
    from attn_audit.tasks.workers import ATTEMPTS, Outcome, ShardItem

    job = ShardJob("run", "builtin:fashion-canvas", ("rollout",))
    _, second, third = (ShardItem(job, s) for s in plan_shards(30, 10))
    bad_input = Outcome(second, error=ValueError("bad input"))
    message = _failure_message([bad_input], tried=3, done=2)
    assert message.startswith("1 of 3 shards failed (shard-0001 [10:20): bad input); nothing was retried")
    assert "run the same command again" not in message
    conflict = Outcome(third, error=StoreConflictError("too many concurrent writers"), attempts=ATTEMPTS)
    message = _failure_message([conflict, bad_input], tried=3, done=1)
    assert message.startswith(f"2 of 3 shards failed, 1 of them still failing after up to {ATTEMPTS} attempts "
                              "(first: shard-0002 [20:30): too many concurrent writers)")
    assert message.endswith("(1 from this attempt): run the same command again to resume")


@pytest.mark.parametrize(("samples", "workers", "size"), [
    (100_000, 2, 1024),  # at most MAX_SHARD_SIZE
    (4000, 2, 500),  # 4 shards per worker
    (1000, 2, 256),  # at least MIN_SHARD_SIZE while every worker still gets such a shard
    (500, 2, 250),  # below that, one shard per worker, evenly
    (40, 2, 20),
    (40, 16, 20),  # each of at least MIN_SPLIT_SIZE samples
    (20, 2, 20),  # too small to split: one shard
    (8, 1, 8),
])
def test_the_automatic_shard_size(samples, workers, size):
    assert auto_shard_size(samples, workers) == size
    assert max_shards(samples, None) >= math.ceil(samples / size)  # the bound the placement plans with


def test_a_run_gets_no_more_actors_than_it_has_shards():
    assert place_run([{"CPU": 2.0}], 40, max_shards(40, None), None)[1] == 20  # both cores, a shard each
    placement, size = place_run([{"CPU": 2.0}], 20, max_shards(20, None), None)
    assert (placement.workers, size) == (1, 20)  # too small to split
    # 289 samples on 32 cores: 18 workers would get 17-sample shards, of which there are only 17
    placement, size = place_run([{"CPU": 32.0}], 289, max_shards(289, None), None)
    assert (placement.workers, size, max_shards(289, size)) == (17, 17, 17)
    for samples in range(1, 1200, 7):
        for cores in (1.0, 2.0, 3.0, 16.0, 64.0):
            placement, size = place_run([{"CPU": cores}], samples, max_shards(samples, None), None)
            assert 1 <= placement.workers <= max_shards(samples, size)


def test_a_resumed_run_keeps_its_shard_size():
    placement, size = place_run([{"CPU": 4.0}], 1000, 2, 100)  # 2 of its 100-sample shards are left
    assert (placement.workers, size) == (2, 100)
