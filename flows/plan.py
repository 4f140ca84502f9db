"""From what the user asked to what a run will do, before any server starts: every check that can fail on
bad input happens here (unknown methods, models, data, stores), so mistakes cost no start-up and end as
one clear line.

Resume and --force. A run's id is derived from (model fingerprint, dataset fingerprint, methods, config);
the store commits each shard once per run id, idempotently. So:
- rerunning the same audit finds the same run id and computes only the shards whose commit is missing;
- `--force` cannot recompute into the same run id (its shards are committed, their commits are no-ops),
  and deleting rows would not help either (a table remembers the shard's transaction). It starts the
  next *generation* instead: `config.generation = g` (absent for the first), a new run id whose every shard
  is computed and committed again; earlier generations stay in the store untouched, each holding every
  sample exactly once (filter by run_id). A plain rerun resumes the latest generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import models
from models.loading import CAPTURES, checkpoint_class_names, checkpoint_family
from storage.datasets import open_dataset
from storage.datasets.refs import FILE_SCHEMES
from storage.store import (
    RELEVANCE_DTYPES,
    RunSpec,
    Store,
    StoreError,
    check_writable,
    fingerprint_files,
    fingerprint_text,
)
from tasks.explain_dataset import parse_target
from tasks.labels import label_map_for, parse_label_map
from tasks.shards import MAX_SHARD_SIZE, max_shards

DEFAULT_BATCH_SIZE = 32


class NothingToDo(models.AttnAuditError):
    """The request selects no samples: not an error, nothing runs."""


@dataclass
class AuditRequest:
    """What the user asked for (the CLI's flags; also the Python API's arguments)."""

    model: str
    data: str
    methods: list[str]
    store: str = "out/store"
    target: str | int = "predicted"
    shard_size: int | None = None  # None: automatic (tasks.shards.auto_shard_size), fixed once the run exists
    batch_size: int = DEFAULT_BATCH_SIZE
    limit: int | None = None
    force: bool = False
    workers: int | None = None
    gpus_per_worker: float = 1
    device: str = "auto"
    precision: str = "float32"
    truncate: bool = False
    relevance_dtype: str = "float32"
    label_map: str | dict | None = None  # dataset label -> model class (JSON text, a JSON file, or a dict)
    capture: str = "fused"  # how workers capture attention (equal maps, not part of the run key)
    storage_options: dict[str, str] | None = field(default=None, repr=False)


@dataclass
class RunPlan:
    """A checked request with the run it maps to. Plain values only: it is the flow's parameter (shown in
    the Prefect UI), so it never holds credentials (storage_options stay outside)."""

    run_id: str
    generation: int
    model_ref: str
    model_fingerprint: str
    data_ref: str
    dataset_fingerprint: str
    methods: list[str]
    config: dict
    num_samples: int
    shard_size: int | None  # None: a new run with an automatic size, chosen once the workers are known
    relevance_dtype: str
    store: str  # the store's resolved URI
    target: str | int
    batch_size: int
    workers: int | None
    gpus_per_worker: float
    device: str
    precision: str
    truncate: bool
    label_map: dict  # the user's dataset label -> model class mapping (also in config when given)
    capture: str  # fused | eager
    exists: bool  # the run is already in the store (this is a resume)
    shards_pending: int  # shards not committed when planned (0: nothing to compute, no Ray needed)

    def spec(self) -> RunSpec:
        if self.shard_size is None:
            raise ValueError("the shard size of a new run is chosen once its workers are known")
        return RunSpec(model_ref=self.model_ref, model_fingerprint=self.model_fingerprint, dataset_ref=self.data_ref,
                       dataset_fingerprint=self.dataset_fingerprint, methods=tuple(self.methods),
                       config=dict(self.config), num_samples=self.num_samples, shard_size=self.shard_size,
                       relevance_dtype=self.relevance_dtype)


def model_fingerprint(ref: str) -> str:
    files = models.checkpoint_files(ref)
    return fingerprint_files(files) if files else fingerprint_text(f"hub:{ref}")


def plan_run(request: AuditRequest) -> RunPlan:
    """Check the request and find its run in the store (created when missing; the run itself is begun by
    the flow). Raises AttnAuditError / DatasetError with a message for the user."""
    r = request
    if r.limit == 0:
        raise NothingToDo("nothing to do: --limit 0 selects no samples")
    if not r.methods:
        raise models.AttnAuditError("give at least one method")
    # canonical specs (name:key=value of the non-default parameters): unknown names and bad parameters fail here
    methods = list(dict.fromkeys(models.methods.get_method(x).spec for x in r.methods))
    policy = parse_target(r.target)
    if (r.shard_size is not None and r.shard_size < 1) or r.batch_size < 1 or (r.limit is not None and r.limit < 0):
        raise models.AttnAuditError("--shard-size and --batch-size must be ≥ 1, --limit ≥ 0")
    if r.capture not in CAPTURES:
        raise models.AttnAuditError(f"--capture must be one of {', '.join(CAPTURES)}, got {r.capture!r}")
    if r.workers is not None and r.workers < 1:
        raise models.AttnAuditError("--workers must be ≥ 1")
    if r.relevance_dtype not in RELEVANCE_DTYPES:
        raise models.AttnAuditError(f"relevance_dtype must be one of {RELEVANCE_DTYPES}, got {r.relevance_dtype!r}")
    mapping = parse_label_map(r.label_map)
    model_ref = _absolute_model_ref(r.model)
    models.check_checkpoint(model_ref)  # a missing folder, damaged file or mismatched weights fail here
    family = checkpoint_family(model_ref)
    for x in methods if family else ():  # e.g. an LRP method on a detector
        models.methods.check_family(models.methods.get_method(x), family)
    fingerprint = model_fingerprint(model_ref)
    try:
        store = Store.open(r.store, create=True, storage_options=r.storage_options)
        check_writable(store)
    except StoreError as err:
        raise models.AttnAuditError(str(err)) from None
    dataset = open_dataset(_absolute_data_ref(r.data))
    _check_labels_and_target(model_ref, dataset, mapping, policy)
    data_fingerprint = dataset.fingerprint()
    total = len(dataset) if r.limit is None else min(r.limit, len(dataset))
    base = {"target": policy, "limit": r.limit, "precision": r.precision, "truncate": r.truncate}
    if mapping:  # only when given: the run ids of audits without one stay as they were
        base["label_map"] = mapping
    configured = {spec: models.methods.get_method(spec).config for spec in methods if ":" in spec}
    if configured:  # the parameters of configured methods, readable in runs.config
        base["method_params"] = configured

    def spec(generation: int, shard_size: int = r.shard_size or MAX_SHARD_SIZE) -> RunSpec:
        config = base if generation == 0 else {**base, "generation": generation}
        return RunSpec(model_ref=model_ref, model_fingerprint=fingerprint, dataset_ref=dataset.ref,
                       dataset_fingerprint=data_fingerprint, methods=tuple(methods), config=config,
                       num_samples=total, shard_size=shard_size, relevance_dtype=r.relevance_dtype)

    try:
        existing = set(store.runs()["run_id"].to_pylist())
        generation = 0
        while spec(generation + 1).run_id in existing:
            generation += 1
        if r.force and spec(generation).run_id in existing:
            generation += 1
        chosen = spec(generation)
        exists = chosen.run_id in existing
        if exists:  # a resume of a damaged run would build on lost rows: refuse, saying how to repair
            store.check(chosen.run_id).raise_if_damaged()
        shard_size = store.run(chosen.run_id).shard_size if exists else r.shard_size  # resumes keep theirs
        committed = store.committed_shards(chosen.run_id) if exists else set()
    except StoreError as err:
        raise models.AttnAuditError(str(err)) from None
    chosen = spec(generation)
    return RunPlan(run_id=chosen.run_id, generation=generation, model_ref=model_ref, model_fingerprint=fingerprint,
                   data_ref=dataset.ref, dataset_fingerprint=chosen.dataset_fingerprint, methods=methods,
                   config=dict(chosen.config), num_samples=total, shard_size=shard_size,
                   relevance_dtype=r.relevance_dtype, store=store.uri, target=policy, batch_size=r.batch_size,
                   workers=r.workers, gpus_per_worker=r.gpus_per_worker, device=r.device, precision=r.precision,
                   truncate=r.truncate, label_map=mapping, capture=r.capture, exists=exists,
                   shards_pending=max_shards(total, shard_size) - len(committed))


def _check_labels_and_target(model_ref: str, dataset, mapping: dict, target: str | int) -> None:
    """Refuse, before any work, dataset labels the model has no class for and targets it cannot explain."""
    classes = checkpoint_class_names(model_ref)
    if classes is None:
        if mapping and models.checkpoint_files(model_ref):  # a hub id's classes are known once loaded
            raise models.AttnAuditError(f"--label-map: {model_ref} predicts no single class a label could name")
        if target != "predicted" and models.checkpoint_files(model_ref):
            raise models.AttnAuditError(f"--target {target}: {model_ref} explains each of its own detections / "
                                        "generated tokens / pair similarities; use --target predicted")
        return
    if isinstance(target, int) and not 0 <= target < len(classes):
        raise models.AttnAuditError(f"--target {target} is out of range: {model_ref} has {len(classes)} classes "
                                    f"(0–{len(classes) - 1})")
    label_map = label_map_for(classes, dataset, mapping)
    label_map.check(dataset.label_values())
    if target == "label" and not dataset.label_values():
        raise models.AttnAuditError(f"--target label: {dataset.ref} has no labels; use --target predicted")


def _absolute_model_ref(ref: str) -> str:
    """A local checkpoint folder by its absolute path: workers do not share the caller's working folder."""
    path = Path(ref).expanduser()
    return str(path.resolve()) if not ref.startswith("builtin:") and path.is_dir() else ref


def _absolute_data_ref(ref: str) -> str:
    scheme, sep, body = ref.partition(":")
    if sep and scheme in FILE_SCHEMES and body and Path(body).expanduser().exists():
        return f"{scheme}:{Path(body).expanduser().resolve()}"
    return ref
