"""Methods with parameters: `models.method(name, **params)` and the spec `name:key=value` wherever a name is
accepted, validated, canonical in the run key and config, and stored under their spec."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from attn_audit.flows.plan import plan_run
from attn_audit.flows.request import AuditRequest
from attn_audit.flows.request_options import split_methods
from attn_audit.models.capture import CapturePlan
from attn_audit.models.engine.rules import eye_like, rownorm
from attn_audit.models.run_capture import run_capture
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import RunSpec, Store
from attn_audit.tasks.explain_shard import explain_shard
from attn_audit.tasks.shards import Shard

from attn_audit import models
from tests import tiny_models


@pytest.fixture(scope="module")
def vit():
    m = tiny_models.wrapped("vit")
    return m, m.preprocess(tiny_models.images(3))


def cls_row(matrix: torch.Tensor) -> np.ndarray:
    """The [CLS] row without [CLS] itself: the reported patch map."""
    return matrix[:, 0, 1:].numpy()


def test_start_layer_minus_one_is_the_last_layer_alone(vit):
    """chefer2021 with start_layer=-1: R = I + Ā_L (the authors' CLIP notebook); rollout: rownorm(Ā_L + I)."""
    m, batch = vit
    capture = run_capture(m.adapter, batch, CapturePlan(False, frozenset({"gradient_weighted", "mean"}))).capture
    last = capture.events[-1]
    expected_chefer = cls_row(eye_like(last.attn) + last.gradient_weighted())
    expected_rollout = cls_row(rownorm(last.head_mean() + eye_like(last.attn)))
    exps = models.explain(m, batch, [models.method("chefer2021", start_layer=-1), "rollout:start_layer=-1"])
    chefer = np.stack([e.relevance["image"].ravel() for e in exps if e.method.startswith("chefer")])
    rollout = np.stack([e.relevance["image"].ravel() for e in exps if e.method.startswith("rollout")])
    np.testing.assert_allclose(chefer, expected_chefer, atol=1e-6)
    np.testing.assert_allclose(rollout, expected_rollout, atol=1e-6)
    assert {e.method for e in exps} == {"chefer2021:start_layer=-1", "rollout:start_layer=-1"}


def test_start_layer_zero_is_the_default_and_the_plain_name(vit):
    m, batch = vit
    plain, zero = models.explain(m, batch, "chefer2021"), models.explain(m, batch, "chefer2021:start_layer=0")
    assert [e.method for e in zero] == ["chefer2021"] * 3
    for a, b in zip(plain, zero):
        np.testing.assert_array_equal(a.relevance["image"], b.relevance["image"])


def test_parameters_are_validated_naming_the_method():
    with pytest.raises(models.AttnAuditError, match="chefer2021 has no parameter.*start_layer \\(int"):
        models.method("chefer2021", begin=2)
    with pytest.raises(models.AttnAuditError, match="start_layer='x' is not a int"):
        models.methods.get_method("chefer2021:start_layer=x")
    with pytest.raises(models.AttnAuditError, match="raw_attention has no parameter"):
        models.method("raw_attention", start_layer=1)
    with pytest.raises(models.AttnAuditError, match="KEY=VALUE"):
        models.methods.get_method("rollout:start_layer")
    m = tiny_models.wrapped("vit")
    with pytest.raises(models.AttnAuditError, match="start_layer=7 is outside the model's 3"):
        models.explain(m, m.preprocess(tiny_models.images(1)), "rollout:start_layer=7")


def test_cli_method_lists_keep_parameters_with_their_method():
    assert split_methods("chefer2021:start_layer=-1,rollout") == ["chefer2021:start_layer=-1", "rollout"]
    assert split_methods("a,b:k=1,j=2,c") == ["a", "b:k=1,j=2", "c"]


def test_the_spec_is_part_of_the_run_key_config_and_store(tmp_path):
    store_path = tmp_path / "store"
    request = dict(model="builtin:fashion-vit", data="builtin:fashion-canvas", store=str(store_path), limit=4)
    plain = plan_run(AuditRequest(methods=["chefer2021:start_layer=0", "rollout"], **request))
    assert plain.methods == ["chefer2021", "rollout"] and "method_params" not in plain.config
    configured = plan_run(AuditRequest(methods=[models.method("chefer2021", start_layer=-1)], **request))
    assert configured.methods == ["chefer2021:start_layer=-1"] and configured.run_id != plain.run_id
    assert configured.config["method_params"] == {"chefer2021:start_layer=-1": {"start_layer": -1}}

    store = Store.open(store_path)
    m = models.load("builtin:fashion-vit", device="cpu")
    run = store.begin_run(RunSpec(model_ref=configured.model_ref, model_fingerprint=configured.model_fingerprint,
                                  dataset_ref=configured.data_ref, dataset_fingerprint=configured.dataset_fingerprint,
                                  methods=tuple(configured.methods), config=configured.config, num_samples=4,
                                  shard_size=4))
    explain_shard(m, open_dataset("builtin:fashion-canvas"), store, run.run_id, Shard(0, 0, 4), configured.methods)
    rows = store.sql(f"SELECT DISTINCT method FROM explanations WHERE run_id = '{run.run_id}'").to_pylist()
    assert rows == [{"method": "chefer2021:start_layer=-1"}]
    assert json.loads(store.run(run.run_id).config)["method_params"] == {"chefer2021:start_layer=-1":
                                                                         {"start_layer": -1}}
    (stored,) = store.load_explanations(run.run_id, sample_ids=[store.predictions(run_id=run.run_id)
                                                                ["sample_id"][0].as_py()])
    assert stored.method == "chefer2021:start_layer=-1"
