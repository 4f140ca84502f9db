"""The audit request is written once (flows.request): the CLI's run options, deploy/serve.py's, the `audit` flow's
parameters and the watcher's all come from it — these tests fail when one of them drifts."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import pytest
from attn_audit.flows.audit import audit, explain
from attn_audit.flows.cli import build_parser
from attn_audit.flows.downstream import Downstream
from attn_audit.flows.request import REQUEST_FIELDS, AuditRequest, ComputeSpec, MapSpec, build_request
from attn_audit.flows.watch import watch_checkpoints
from pydantic import ValidationError

from attn_audit import models

ROOT = Path(__file__).resolve().parents[2]
OWN_OPTIONS = {"quiet", "verbose"}  # how a command shows its work, not part of the request


def option_names(parser) -> set[str]:
    return {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}


def subcommand(name: str):
    return build_parser()._subparsers._group_actions[0].choices[name]


@pytest.mark.parametrize("command", ["audit", "explain"])
def test_cli_run_options_are_exactly_the_request_fields(command):
    assert option_names(subcommand(command)) == set(REQUEST_FIELDS) | OWN_OPTIONS
    for action in subcommand(command)._actions:  # help and choices come from the field
        field = REQUEST_FIELDS.get(action.dest)
        if field is not None and action.dest != "methods":
            assert field.description and field.description.split(" (")[0][:30] in action.help


def test_serve_options_are_the_request_fields_but_force():
    spec = importlib.util.spec_from_file_location("serve", ROOT / "deploy" / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    schedule = {"name", "cron", "interval", "timezone", "watch", "watch_interval", "watch_data"}
    assert option_names(serve.build_parser()) == (set(REQUEST_FIELDS) - {"force"}) | schedule


def test_the_flows_take_the_request_and_the_watcher_takes_its_compute_part():
    assert inspect.signature(audit.fn).parameters["request"].annotation in (AuditRequest, "AuditRequest")
    assert set(inspect.signature(audit.fn).parameters) == {"request", "downstream", "progress", "verbose"}
    assert set(inspect.signature(explain.fn).parameters) == {"request", "progress", "verbose"}
    watch = inspect.signature(watch_checkpoints.fn).parameters
    assert watch["compute"].default == ComputeSpec()
    assert not set(watch) & set(ComputeSpec.model_fields)  # no compute option restated beside it


def test_flat_and_nested_requests_are_the_same_and_frozen():
    flat = AuditRequest(model="m", data="d", methods=[models.method("chefer2021", start_layer=-1), "rollout"],
                        batch_size=8, limit=5, target="3")
    nested = AuditRequest(maps=MapSpec(model="m", data="d", methods=("chefer2021:start_layer=-1", "rollout"),
                                       limit=5, target=3), compute=ComputeSpec(batch_size=8))
    assert flat == nested and flat.maps.target == 3
    assert AuditRequest.model_validate(flat.model_dump(mode="json")) == flat  # what a deployment stores
    with pytest.raises(ValidationError):
        flat.compute.batch_size = 2


@pytest.mark.parametrize(("options", "named"), [({"batch_size": 0}, "--batch-size"), ({"precision": "fp8"},
                         "--precision"), ({"limit": -1}, "--limit"), ({"workers": 0}, "--workers"),
                         ({"capture": "lazy"}, "--capture"), ({"colour": "red"}, "--colour")])
def test_a_bad_value_is_refused_naming_its_option(options, named):
    with pytest.raises(models.AttnAuditError, match=named):
        build_request(model="m", data="d", **options)


def test_the_compare_job_needs_a_baseline():
    assert [j.__name__ for j in Downstream().steps()] == ["evaluate", "report"]
    jobs = Downstream(jobs=("report", "compare", "evaluate"), compare_with="abc")
    assert [j.__name__ for j in jobs.steps()] == ["evaluate", "compare", "report"]  # the fixed order
    with pytest.raises(ValidationError, match="compare_with"):
        Downstream(jobs=("compare",))
