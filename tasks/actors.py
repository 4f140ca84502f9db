"""Ray actors that own models (each loads its checkpoint once and serves many shards), and where they go.

    placement = plan_placement(node_resources(), workers=None, gpus_per_worker=1, device="auto")

An actor explains a shard AND commits it to the store itself, so maps never travel through the driver;
what comes back is a `ShardResult` (counts and seconds). After the shards, the same actors run the
downstream evaluation chunk by chunk: its perturbation forward passes need the model too. Progress inside a
shard is readable while the shard runs (`progress()`: the actor runs two threads, one for the shard, one for
such calls). tasks.workers pools them and retries what fails; nothing of a shard is visible in the store until
its commit, and the commit is idempotent, so a shard interrupted anywhere is stored exactly once.
"""

from __future__ import annotations

import math
import os
import re
import socket
from dataclasses import dataclass, field

import ray
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store
from attn_audit.tasks.evaluate.chunks import Chunk
from attn_audit.tasks.evaluate.run import ChunkJob, evaluate_chunk
from attn_audit.tasks.explain_shard import ShardJob, ShardResult, explain_shard
from attn_audit.tasks.shards import Shard, auto_shard_size, max_shards

from attn_audit import models

# Default CPU share of a CPU actor: one core, one torch thread. Several single-threaded processes beat one
# multi-threaded one here: torch's OpenMP threads spin at every barrier, and on a machine shared with any
# other job two threads on two cores ran 40x slower than one (bench/bench_pipeline.py, docs/workflow.md).
CPUS_PER_WORKER = 1
MAX_WORKERS_PER_CPU = 2  # --workers beyond this many per core is capped
WORKER_BASE_BYTES = 600 * 2 ** 20  # a process with torch, Ray and transformers imported: ~500 MB measured


@dataclass(frozen=True)
class ExplainerConfig:
    """How every actor of a pool loads its model and opens the store (actor constructor arguments)."""

    model_ref: str
    store_uri: str
    device: str = "auto"
    precision: str = "float32"
    truncate: bool = False
    storage_options: dict[str, str] | None = field(default=None, hash=False)
    capture: str = "fused"


class ExplainerActor:
    """A model in a Ray worker process. Made remote by tasks.workers.WorkerPool (the class stays importable without
    Ray running, and testable as a plain object)."""

    def __init__(self, config: ExplainerConfig, num_threads: int | None = None):
        import torch

        if num_threads:
            torch.set_num_threads(num_threads)
        self.config = config
        self.model = models.load(config.model_ref, device=config.device, precision=config.precision,
                                 truncate=config.truncate, capture=config.capture)
        self.store = Store.open(config.store_uri, storage_options=config.storage_options)
        self._datasets: dict[str, object] = {}
        self._shard: int | None = None
        self._done = 0

    def info(self) -> dict:
        import torch

        return {"pid": os.getpid(), "host": socket.gethostname(), "device": str(self.model.device),
                "threads": torch.get_num_threads()}

    def progress(self) -> tuple[int | None, int]:
        """(shard being explained or None, positions of it done so far)."""
        return self._shard, self._done

    def run_shard(self, job: ShardJob, shard: Shard, retry: bool = False) -> ShardResult:
        dataset = self._dataset(job.data_ref)
        self._shard, self._done = shard.id, 0

        def advance(n: int) -> None:
            self._done += n

        try:
            return explain_shard(self.model, dataset, self.store, job.run_id, shard, job.methods, job.target,
                                 job.batch_size, job.label_map, on_batch_done=advance, skip_committed=retry)
        finally:
            self._shard = None

    def evaluate_chunk(self, job: ChunkJob, chunk: Chunk) -> bool:
        """The downstream evaluation of one committed chunk with the model this actor holds (perturbation
        passes are most of the evaluation's compute); results are committed to the store from here."""
        return evaluate_chunk(self.store, self._dataset(job.dataset_ref), self.model, job, chunk)

    def _dataset(self, ref: str):
        if ref not in self._datasets:
            self._datasets = {ref: open_dataset(ref)}  # one run at a time: keep only the latest
        return self._datasets[ref]


# ---------------------------------------------------------------------------------------------- placement
@dataclass(frozen=True)
class Placement:
    """How many actors and what each asks Ray for."""

    workers: int
    num_cpus: float
    num_gpus: float
    threads: int  # torch intra-op threads per actor
    note: str = ""  # why the count differs from the one asked for (e.g. capped to what the cluster holds)

    def describe(self) -> str:
        amount = self.num_gpus or self.num_cpus
        each = f"{_num(amount)} {'GPU' if self.num_gpus else 'CPU'}{'s' if amount > 1 else ''}"
        kind = "GPU" if self.num_gpus else "CPU"
        return (f"{self.workers} {kind} worker{'s' if self.workers != 1 else ''} ({each} each, "
                f"{self.threads} torch thread{'s' if self.threads != 1 else ''})" + (f"; {self.note}" if self.note
                                                                                      else ""))


def node_resources() -> list[dict[str, float]]:
    """The resources of every live node of the connected Ray cluster (CPU, GPU, ...)."""
    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def plan_placement(nodes: list[dict[str, float]], workers: int | None = None, gpus_per_worker: float = 1,
                   device: str = "auto", max_workers: int | None = None,
                   worker_bytes: float | None = None) -> Placement:
    """GPU actors (`gpus_per_worker` each) when the cluster has GPUs and `device` allows them; otherwise CPU
    actors, by default one per CPUS_PER_WORKER cores of each node (at least one, one torch thread each);
    `workers` overrides the count and shares the cores out among them, up to MAX_WORKERS_PER_CPU per core and
    as many as the nodes' Ray memory holds at `worker_bytes` each (a larger count is capped, and the placement's
    note says so). `max_workers` (the shards to run) caps the count, so that no actor loads a model it will not
    use. Decided from what the cluster has, never by waiting: a request the cluster cannot meet is an error
    here, not an actor that waits forever."""
    if workers is not None and workers < 1:
        raise models.AttnAuditError("--workers must be ≥ 1")
    if gpus_per_worker < 0 or (gpus_per_worker > 1 and gpus_per_worker != int(gpus_per_worker)):
        raise models.AttnAuditError("--gpus-per-worker must be a fraction below 1 (0.5: two workers per GPU) "
                                    f"or a whole number, got {gpus_per_worker:g}")
    cpus = [n.get("CPU", 0.0) for n in nodes]
    gpus = [n.get("GPU", 0.0) for n in nodes]
    wants_cuda = str(device).startswith("cuda")
    if device != "cpu" and gpus_per_worker > 0 and sum(gpus) > 0:
        capacity = sum(int(g // gpus_per_worker) for g in gpus)
        if capacity < 1:
            raise models.AttnAuditError(f"each worker asks for {_num(gpus_per_worker)} GPUs (--gpus-per-worker) "
                                        f"but no node of the Ray cluster has that many (GPUs per node: "
                                        f"{', '.join(_num(g) for g in gpus)})")
        n = workers or min(capacity, max_workers or capacity)
        if n > capacity:
            raise models.AttnAuditError(f"{n} workers × {_num(gpus_per_worker)} GPUs do not fit the Ray cluster's "
                                        f"GPUs ({_num(sum(gpus))}); use --workers {capacity} or fewer")
        cpu_share = _share(cpus, n) if sum(cpus) else 0.0
        return Placement(n, min(1.0, cpu_share), gpus_per_worker, max(1, min(4, int(cpu_share))))
    if wants_cuda:
        raise models.AttnAuditError(f"--device {device} but the Ray cluster has no GPUs "
                                    f"(CPUs: {_num(sum(cpus))}); use --device auto or cpu")
    if sum(cpus) <= 0:
        raise models.AttnAuditError("the Ray cluster has no CPUs to run workers on")
    limit, why = _cpu_worker_limit(nodes, worker_bytes)
    if workers:  # the user's count: the cores are shared out among them
        note = ""
        if workers > limit:
            note = f"--workers {workers} capped to {limit}: {why}"
            workers = limit
        share = _share(cpus, workers)
        return Placement(workers, share, 0.0, max(1, int(share)), note)
    n = max(1, min(limit, sum(int(c // CPUS_PER_WORKER) for c in cpus)))
    share = _share(cpus, n)  # fewer shards than actors: fewer actors, each still with its own share
    return Placement(max(1, min(n, max_workers or n)), share, 0.0, max(1, int(share)))


def worker_bytes(model_ref: str) -> float:
    """About what one actor takes: the Python process with torch and Ray, and the model's weights a few times
    over (the weights, activations and the relevancy of a batch)."""
    files = models.checkpoint_files(model_ref) or []
    return WORKER_BASE_BYTES + 3 * sum(f.stat().st_size for f in files if f.suffix == ".safetensors")


def place_run(nodes: list[dict[str, float]], num_samples: int, pending: int, shard_size: int | None,
              workers: int | None = None, gpus_per_worker: float = 1, device: str = "auto",
              worker_bytes: float | None = None) -> tuple[Placement, int]:
    """The actors of a run with `pending` shards to compute (plan_placement) and its shard size: a new run's
    automatic size (`shard_size` None) is chosen for those actors, and when its even split leaves fewer shards than
    actors (a small run on a cluster of 17 workers or more) the actors are planned again for the shards there are."""
    placement = plan_placement(nodes, workers, gpus_per_worker, device, max_workers=pending, worker_bytes=worker_bytes)
    if shard_size is None:
        shard_size = auto_shard_size(num_samples, placement.workers)
        shards = max_shards(num_samples, shard_size)
        if shards < placement.workers:
            placement = plan_placement(nodes, workers, gpus_per_worker, device, max_workers=shards,
                                       worker_bytes=worker_bytes)
    return placement, shard_size


def _cpu_worker_limit(nodes: list[dict[str, float]], worker_bytes: float | None) -> tuple[int, str]:
    """The most CPU actors the nodes hold (each loads the model: more than a few per core only thrash), and why."""
    by_cpu = sum(int(n.get("CPU", 0.0) * MAX_WORKERS_PER_CPU) for n in nodes)
    cpus = _num(sum(n.get("CPU", 0.0) for n in nodes))
    why = f"the Ray cluster has {cpus} CPUs ({MAX_WORKERS_PER_CPU} workers per CPU at most)"
    if worker_bytes:
        by_memory = sum(int(n.get("memory", 0.0) // worker_bytes) for n in nodes)
        if 0 < by_memory < by_cpu:
            gib = sum(n.get("memory", 0.0) for n in nodes) / 2 ** 30
            return by_memory, (f"the Ray cluster's {gib:.1f} GiB of memory hold {by_memory} workers of about "
                               f"{worker_bytes / 2 ** 30:.1f} GiB each")
    return max(1, by_cpu), why


def _share(capacities: list[float], n: int) -> float:
    """The largest per-actor amount p such that n actors of p fit on the nodes (each node holds
    floor(capacity / p) of them). Candidates are capacity / j; p = capacity / n always fits one node."""
    best = 0.0
    for c in capacities:
        for j in range(1, n + 1):
            p = c / j
            if p > best and sum(int(x / p + 1e-9) for x in capacities) >= n:
                best = p
                break  # larger j only gives smaller p for this node
    # Ray takes fractions of a resource only below 1 (0.5 CPU, not 1.5)
    return float(int(best)) if best >= 1 else math.floor(best * 1e4) / 1e4


def _num(x: float) -> str:
    return f"{x:g}"


def error_line(err: BaseException) -> str:
    """The gist of an error in one line: for a Ray error, the message of the exception behind it (e.g. the
    model's load error) without Ray's traceback or the exception's module path."""
    text = str(getattr(err, "cause", None) or err)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(("File ", "Traceback"))]
    line = next((ln for ln in reversed(lines) if ":" in ln), lines[-1] if lines else type(err).__name__)
    return re.sub(r"^(?:[A-Za-z_][\w.]*\.)?(\w+(?:Error|Exception)): ", r"\1: ", line)
