"""The checkpoint watcher's memory is the store: which finished run a checkpoint is compared with, and whether it
was audited already (flows.watch), on a real store with hand-made runs."""

from __future__ import annotations

import pytest
from attn_audit.flows.watch import _baseline_and_done
from attn_audit.storage.store import Store

from tests.integration.test_compare import add_run


@pytest.fixture
def store(tmp_path):
    return Store.open(tmp_path / "store", create=True)


def test_an_empty_store_has_no_baseline(store):
    assert _baseline_and_done(store, "b" * 64, None) == (None, None)


def test_a_new_checkpoint_takes_the_latest_run_of_another_model(store):
    first, second = add_run(store, "a", 0), add_run(store, "c", 0)
    baseline, done = _baseline_and_done(store, "b" * 64, None)
    assert (baseline["run_id"], done) == (second, None)
    baseline, done = _baseline_and_done(store, "a" * 64, None)  # a's own run is done; c came after it
    assert (baseline, done["run_id"]) == (None, first)


def test_an_audited_checkpoint_is_compared_with_the_run_before_its_own(store):
    before = add_run(store, "a", 0)
    own = add_run(store, "b", 1)
    add_run(store, "c", 0)  # a later model does not make b's baseline
    baseline, done = _baseline_and_done(store, "b" * 64, None)
    assert (baseline["run_id"], done["run_id"]) == (before, own)


def test_data_restricts_baselines_to_its_dataset(store):
    add_run(store, "a", 0)
    assert _baseline_and_done(store, "b" * 64, "builtin:other") == (None, None)
    assert _baseline_and_done(store, "b" * 64, "builtin:fake")[0]["model_fingerprint"] == "a" * 64
