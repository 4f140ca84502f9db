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

from dataclasses import dataclass
from pathlib import Path

from attn_audit.flows.request import AuditRequest, ComputeSpec
from attn_audit.models.loading import checkpoint_class_names, checkpoint_family
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.datasets.refs import FILE_SCHEMES
from attn_audit.storage.store import (
    RunSpec,
    Store,
    StoreError,
    check_writable,
    fingerprint_files,
    fingerprint_text,
)
from attn_audit.tasks.explain_dataset import parse_target
from attn_audit.tasks.labels import label_map_for, parse_label_map
from attn_audit.tasks.shards import MAX_SHARD_SIZE, max_shards

from attn_audit import models


class NothingToDo(models.AttnAuditError):
    """The request selects no samples: not an error, nothing runs."""


@dataclass
class RunPlan:
    """A checked request with the run it maps to: the run's key (model and dataset as resolved and fingerprinted,
    canonical method specs, config) and what the store holds of it."""

    request: AuditRequest
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
    store: str  # the store's resolved URI
    target: str | int
    label_map: dict  # the user's dataset label -> model class mapping (also in config when given)
    exists: bool  # the run is already in the store (this is a resume)
    shards_pending: int  # shards not committed when planned (0: nothing to compute, no Ray needed)

    @property
    def compute(self) -> ComputeSpec:
        return self.request.compute

    @property
    def relevance_dtype(self) -> str:
        return self.request.maps.relevance_dtype

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


def plan_run(request: AuditRequest, storage_options: dict[str, str] | None = None) -> RunPlan:
    """Check the request and find its run in the store (created when missing; the run itself is begun by
    the flow). Raises AttnAuditError / DatasetError with a message for the user."""
    r, c = request.maps, request.compute
    if r.limit == 0:
        raise NothingToDo("nothing to do: --limit 0 selects no samples")
    # canonical specs (name:key=value of the non-default parameters): unknown names and bad parameters fail here
    methods = list(dict.fromkeys(models.methods.get_method(x).spec for x in r.methods_or_default))
    policy = parse_target(r.target)
    mapping = parse_label_map(r.label_map)
    model_ref = _absolute_model_ref(r.model)
    models.check_checkpoint(model_ref)  # a missing folder, damaged file or mismatched weights fail here
    family = checkpoint_family(model_ref)
    for x in methods if family else ():  # e.g. an LRP method on a detector
        models.methods.check_family(models.methods.get_method(x), family)
    fingerprint = model_fingerprint(model_ref)
    try:
        store = Store.open(c.store, create=True, storage_options=storage_options)
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

    def spec(generation: int, shard_size: int = c.shard_size or MAX_SHARD_SIZE) -> RunSpec:
        config = base if generation == 0 else {**base, "generation": generation}
        return RunSpec(model_ref=model_ref, model_fingerprint=fingerprint, dataset_ref=dataset.ref,
                       dataset_fingerprint=data_fingerprint, methods=tuple(methods), config=config,
                       num_samples=total, shard_size=shard_size, relevance_dtype=r.relevance_dtype)

    try:
        existing = store.run_ids()
        generation = 0
        while spec(generation + 1).run_id in existing:
            generation += 1
        if c.force and spec(generation).run_id in existing:
            generation += 1
        chosen = spec(generation)
        exists = chosen.run_id in existing
        if exists:  # a resume of a damaged run would build on lost rows: refuse, saying how to repair
            store.check(chosen.run_id).raise_if_damaged()
        shard_size = store.run(chosen.run_id).shard_size if exists else c.shard_size  # resumes keep theirs
        committed = store.committed_shards(chosen.run_id) if exists else set()
    except StoreError as err:
        raise models.AttnAuditError(str(err)) from None
    chosen = spec(generation)
    return RunPlan(request=request, run_id=chosen.run_id, generation=generation, model_ref=model_ref,
                   model_fingerprint=fingerprint, data_ref=dataset.ref, dataset_fingerprint=chosen.dataset_fingerprint,
                   methods=methods, config=dict(chosen.config), num_samples=total, shard_size=shard_size,
                   store=store.uri, target=policy, label_map=mapping, exists=exists,
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
