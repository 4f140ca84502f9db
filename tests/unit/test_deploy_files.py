"""deploy/: Docker, Kubernetes and `ray up` cannot run here, so the files are parsed and every entrypoint, command,
flag, parameter and image they name is checked against the code, the installed Ray / Prefect CLIs and each other."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import tomllib
import yaml
from attn_audit.flows.cli import build_parser
from packaging.specifiers import SpecifierSet
from prefect import Flow
from prefect.cli.deploy._models import PrefectYamlModel  # the model `prefect deploy` validates prefect.yaml with
from prefect.client.schemas.objects import ConcurrencyLimitStrategy
from prefect.schedules import Cron
from prefect.utilities.callables import parameter_schema
from prefect.utilities.schema_tools import validate
from ray.scripts.scripts import start as ray_start

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def load_yaml(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def docker(instruction: str) -> list[str]:
    return [args for name, args in dockerfile() if name == instruction]


IMAGE = "ghcr.io/example/attn-audit:" + PYPROJECT["project"]["version"]
(WORKDIR,) = docker("WORKDIR")


def entry_flow(entrypoint: str, base: Path = ROOT) -> Flow:
    """`path/to/file.py:name` (relative to `base`) → the Prefect flow it names (the file must exist in this
    repository, the object must be a flow)."""
    path, _, name = entrypoint.partition(":")
    file = (base / path).resolve()
    assert file.is_file(), f"entrypoint file {path} does not exist"
    module = importlib.import_module(".".join(file.relative_to(ROOT).with_suffix("").parts))
    found = getattr(module, name, None)
    assert isinstance(found, Flow), f"{entrypoint} is not a Prefect flow"
    return found


def check_parameters(found: Flow, parameters: dict) -> None:
    """Every parameter is one of the flow's, every required one is given, and the values fit its schema."""
    signature = inspect.signature(found.fn).parameters
    assert set(parameters) <= set(signature), f"{found.name}: unknown parameters {set(parameters) - set(signature)}"
    required = {n for n, p in signature.items() if p.default is inspect.Parameter.empty}
    assert required <= set(parameters), f"{found.name}: missing required parameters {required - set(parameters)}"
    validate(parameters, parameter_schema(found.fn).model_dump_for_openapi(), raise_on_error=True)


def ray_start_flags(command: str) -> set[str]:
    """The --flags of a `ray start ...` command line."""
    words = shlex.split(command)
    assert words[:2] == ["ray", "start"], command
    return {w.split("=", 1)[0] for w in words[2:] if w.startswith("--")}


RAY_START_OPTIONS = {opt for p in ray_start.params for opt in p.opts}


def test_prefect_yaml_deployments_name_real_flows_parameters_schedules_and_the_image_layout():
    raw = load_yaml("prefect.yaml")
    model = PrefectYamlModel.model_validate(raw)
    assert {d.name for d in model.deployments} == {"nightly", "checkpoints"}
    (step,) = raw["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == WORKDIR
    for d in model.deployments:
        check_parameters(entry_flow(d.entrypoint), d.parameters)
        assert d.schedules and d.work_pool.name == "attn-audit"
        for s in raw["deployments"][[x["name"] for x in raw["deployments"]].index(d.name)]["schedules"]:
            if "cron" in s:
                Cron(s["cron"], timezone=s["timezone"])  # raises on a bad expression or zone
        assert d.concurrency_limit.collision_strategy in ConcurrencyLimitStrategy.__members__
        assert d.work_pool.job_variables["env"]["RAY_ADDRESS"] == ray_client_address()


def ray_client_address() -> str:
    """What the flows attach to: the Ray client port of the KubeRay head service."""
    cluster = load_yaml("k8s/raycluster.yaml")
    return f"ray://{cluster['metadata']['name']}-head-svc:10001"


def test_serve_builds_deployments_of_real_flows_with_valid_parameters(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("serve", DEPLOY / "serve.py")
    serve = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve)
    args = serve.build_parser().parse_args([
        "--model", "builtin:fashion-vit", "--data", "builtin:fashion-canvas", "--store", str(tmp_path / "store"),
        "--methods", "chefer2021", "rollout", "--limit", "8", "--target", "label", "--batch-size", "16",
        "--workers", "2", "--gpus-per-worker", "0.5", "--device", "cpu", "--interval", "60",
        "--watch", str(tmp_path), "--watch-interval", "5", "--watch-data", "builtin:fashion-canvas"])
    audit, watch = serve.deployments(args)
    for d in (audit, watch):
        check_parameters(entry_flow(d.entrypoint, Path.cwd()), d.parameters)  # serve() resolves it from here
        assert len(d.schedules) == 1 and d.concurrency_limit == 1
    request = audit.parameters["request"]
    assert request["compute"]["gpus_per_worker"] == 0.5 and request["maps"]["methods"] == ["chefer2021", "rollout"]
    assert watch.parameters["folder"] == str(tmp_path) and watch.parameters["compute"] == request["compute"]
    assert audit.schedules[0].schedule.interval.total_seconds() == 60
    (nightly,) = serve.deployments(serve.build_parser().parse_args([
        "--model", "m", "--data", "d", "--store", "s", "--cron", "30 1 * * 1", "--timezone", "Europe/Paris"])
    ).pop().schedules
    assert (nightly.schedule.cron, nightly.schedule.timezone) == ("30 1 * * 1", "Europe/Paris")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert serve.main(["--model", "m", "--data", "d", "--store", "s"]) == 1  # schedules need a real server


def test_dockerfile_copies_every_package_pins_what_the_cluster_runs_and_calls_real_commands():
    copied = {src for args in docker("COPY") for src in args.split()[:-1]}  # COPY SRC... DEST
    assert all((ROOT / src).exists() for src in copied)
    packages = set(PYPROJECT["tool"]["setuptools"]["package-dir"].values())  # the folders of attn_audit
    assert packages <= copied and {"pyproject.toml", "README.md"} <= copied
    installs = " ".join(docker("RUN"))
    (torch_pin,) = re.findall(r"torch==([\w.]+)", installs)
    torch_range = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert torch_pin in SpecifierSet(torch_range.removeprefix("torch"))
    (ray_pin,) = re.findall(r"ray\[default\]==([\w.]+)", installs)
    assert ray_pin == load_yaml("k8s/raycluster.yaml")["spec"]["rayVersion"] == ray.__version__
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)
    cmd = yaml.safe_load(docker("CMD")[0])  # exec form: a JSON list
    calls = re.findall(r"attn-audit (\w[\w-]*)", installs) + ([cmd[1]] if cmd[1:] and cmd[1][0] != "-" else [])
    assert cmd[0] in PYPROJECT["project"]["scripts"] and calls and set(calls) <= subcommands | {"--help"}


def test_kuberay_cluster_has_a_gpu_worker_group_on_the_image_with_real_ray_start_flags():
    cluster = load_yaml("k8s/raycluster.yaml")
    assert (cluster["apiVersion"], cluster["kind"]) == ("ray.io/v1", "RayCluster")
    spec = cluster["spec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no actor on the head
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    for group in groups:
        assert {f"--{k}" for k in group["rayStartParams"]} <= RAY_START_OPTIONS
        assert {c["image"] for c in group["template"]["spec"]["containers"]} == {IMAGE}
    gpu = [g for g in spec["workerGroupSpecs"] if "num-gpus" in g["rayStartParams"]]
    assert gpu
    for g in gpu:
        (container,) = g["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == g["rayStartParams"]["num-gpus"]
        assert g["replicas"] == g["minReplicas"] == g["maxReplicas"]  # placement never waits for new nodes


def test_prefect_worker_manifest_polls_the_pool_of_the_deployments_with_real_flags():
    manifest = load_yaml("k8s/prefect-worker.yaml")
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["image"] == IMAGE
    command = container["command"]
    assert command[:3] == ["prefect", "worker", "start"]
    help_text = subprocess.run([str(Path(sys.executable).parent / "prefect"), "worker", "start", "--help"],
                               capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"}).stdout
    assert all(f in help_text for f in command[3:] if f.startswith("--"))
    pool = command[command.index("--pool") + 1]
    assert {d["work_pool"]["name"] for d in load_yaml("prefect.yaml")["deployments"]} == {pool}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["RAY_ADDRESS"] == ray_client_address() and env["PREFECT_API_URL"].endswith("/api")


def test_ray_up_config_runs_the_image_with_real_ray_start_flags_and_fixed_gpu_workers():
    config = load_yaml("ray-cluster.yaml")
    assert config["docker"]["image"] == IMAGE
    nodes = config["available_node_types"]
    assert config["head_node_type"] in nodes and nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [n for name, n in nodes.items() if name != config["head_node_type"]]
    assert workers and all(n["min_workers"] == n["max_workers"] for n in workers)
    assert "--gpus all" in config["docker"]["worker_run_options"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        for command in config[key]:
            if command != "ray stop":
                assert ray_start_flags(command) <= RAY_START_OPTIONS, command


@pytest.mark.parametrize("name", ["prefect.yaml", "k8s/raycluster.yaml", "k8s/prefect-worker.yaml",
                                  "ray-cluster.yaml"])
def test_every_yaml_file_parses(name):
    assert isinstance(load_yaml(name), dict)
