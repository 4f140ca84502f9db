"""One audit request, written once: what changes the maps (`MapSpec`: model, data, methods, target, precision,
truncation, capture, ...) and how they are computed (`ComputeSpec`: batch and shard sizes, workers, GPUs, store).

Everything that starts an audit takes its options from these models: the CLI's `audit` / `explain` options
(flows.request_options), the `audit` flow's parameters (flows.audit), deploy/serve.py, deploy/prefect.yaml and the
checkpoint watcher; tests/unit/test_request.py fails when one of them drifts. Frozen and validated: a bad value is
refused with a message that names the option, before any server starts.

Credentials are never part of a request (a request is a flow parameter, stored by the Prefect API): object-store
options come from the environment, or are handed to `run_audit(..., storage_options=)` in-process.
"""

from __future__ import annotations

from typing import Any, Literal

from attn_audit.storage.store import RELEVANCE_DTYPES
from attn_audit.tasks.shards import MAX_SHARD_SIZE, MIN_SHARD_SIZE, SHARDS_PER_WORKER
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_BATCH_SIZE = 32


class _Spec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MapSpec(_Spec):
    """What changes the maps: two requests that agree here explain into the same run (with --force: a new
    generation of it)."""

    model: str = Field(description="builtin:NAME, a checkpoint folder, or a hub id")
    data: str = Field(description="builtin:NAME, imagefolder:PATH, jsonl:PATH, csv:PATH or parquet:PATH")
    methods: tuple[str, ...] = Field(
        (), description="relevancy methods, with parameters as NAME:KEY=VALUE[,KEY=VALUE] (e.g. "
        "chefer2021:start_layer=-1; see `attn-audit methods`); none given: the attention methods")
    target: str | int = Field("predicted", description="class to explain: 'predicted' (default), 'label' (the "
                              "dataset's label) or a class index")
    label_map: str | dict[str, str | int] | None = Field(
        None, description="dataset label -> model class, for labels that are not the model's class names: a JSON "
        "object ('{\"tshirt\": \"T-shirt/top\"}') or a JSON file. Labels are matched to the model's classes by name "
        "(case and spaces ignored); integer labels are class indices")
    limit: int | None = Field(None, ge=0, description="explain only the first N samples")
    precision: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="forward-pass precision on GPU; relevancy always accumulates in float32")
    truncate: bool = Field(False, description="explain the first part of texts longer than the model takes "
                           "(default: refuse them)")
    relevance_dtype: Literal[RELEVANCE_DTYPES] = Field(
        "float32", description="how the store keeps the maps (float16 halves the store; the maps are computed in "
        "float32 either way)")
    capture: Literal["fused", "eager"] = Field(
        "fused", description="fused (default): attention through PyTorch's sdpa, keeping per layer only the maps the "
        "methods need (memory-light; LXMERT / VisualBERT always eager); eager: every layer's per-head maps, the "
        "reference. Both give the same maps (not part of the run key)")

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        """Method objects (`models.method(...)`) become their specs; each once, in order."""
        return tuple(dict.fromkeys(getattr(x, "spec", x) for x in value)) if value is not None else ()

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.lstrip("-").isdigit() else value

    @property
    def methods_or_default(self) -> list[str]:
        from attn_audit import models  # torch: not needed to read or serve a request

        return list(self.methods) or models.default_methods()


class ComputeSpec(_Spec):
    """How the maps are computed and where they go: nothing here changes a map."""

    store: str = Field("out/store", description="store folder or URI (s3://, gs://; default out/store), created "
                       "when missing; reachable from every Ray worker")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="samples per forward/backward pass inside a "
                            f"worker (default {DEFAULT_BATCH_SIZE})")
    shard_size: int | None = Field(None, ge=1, description="samples per shard: the unit of commit, retry and "
                                   f"resumption (default: about {SHARDS_PER_WORKER} shards per worker, "
                                   f"{MIN_SHARD_SIZE} to {MAX_SHARD_SIZE} samples, or one per worker for a smaller "
                                   "run; a resumed run keeps its own)")
    workers: int | None = Field(None, ge=1, description="Ray actors (each loads the model once); default: one per "
                                "GPU, or one per CPU core")
    gpus_per_worker: float = Field(1.0, gt=0, description="GPUs per actor when the Ray cluster has GPUs (default 1; "
                                   "0.5 = two actors per GPU)")
    device: str = Field("auto", description="auto (GPU when the worker has one), cpu, cuda, cuda:1 ...")
    force: bool = Field(False, description="recompute every shard, as a new generation of the run (a new run id; "
                        "the old one is kept)")


DEFAULT_COMPUTE = ComputeSpec()


class AuditRequest(_Spec):
    """`maps` + `compute`. Also built from flat keywords: AuditRequest(model=..., data=..., batch_size=8)."""

    maps: MapSpec
    compute: ComputeSpec = DEFAULT_COMPUTE

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, values: Any) -> Any:
        if not isinstance(values, dict) or "maps" in values:
            return values
        flat = {k: v for k, v in values.items() if v is not None}  # None: the default
        maps = {k: flat.pop(k) for k in list(flat) if k in MapSpec.model_fields}
        compute = {k: flat.pop(k) for k in list(flat) if k in ComputeSpec.model_fields}
        return {"maps": maps, "compute": flat.pop("compute", compute), **flat}  # the rest: refused as unknown


REQUEST_FIELDS = {**MapSpec.model_fields, **ComputeSpec.model_fields}


def build_request(**options: Any) -> AuditRequest:
    """AuditRequest from flat options, a validation error turned into one line that names the option."""
    from attn_audit.models.errors import AttnAuditError

    try:
        return AuditRequest(**options)
    except ValidationError as err:
        raise AttnAuditError(describe(err)) from None


def describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        names = [str(x) for x in e["loc"] if str(x) in REQUEST_FIELDS or e["type"] == "extra_forbidden"]
        where = "--" + names[-1].replace("_", "-") if names else "request"
        parts.append(f"{where}: {e['msg']} (got {e.get('input')!r})")
    return "; ".join(parts)
