"""The checkpoint watcher: a flow that looks at a folder of checkpoints (or a list of checkpoint references) and,
for each checkpoint whose model fingerprint has no finished run in the store yet, audits it on the same samples
as the previous checkpoint's run and compares the two runs (tasks.compare). Deployed on a short interval schedule
(deploy/serve.py --watch), each flow run is one look; the store is the watcher's memory. Each audit is the
`audit` flow, run as a subflow.

The baseline of a new checkpoint is the latest finished run of another model (in `data`'s dataset when given):
the previous checkpoint, or the scheduled audit of the model in production. The new audit takes the baseline's
dataset, limit, target policy, methods, precision and truncation, so it covers the same sample ids. Its
downstream jobs are evaluation, the comparison, then the report (which then shows the comparison). With no
baseline yet, a checkpoint is audited on `data` when given (it becomes the first baseline), else left for later.

A checkpoint whose run finished and was compared is skipped; one whose audit was interrupted is resumed (the
audit is idempotent), so overlapping or repeated looks never store anything twice.

torch, Ray and the audit flow are imported only once there is a checkpoint to look at: a look at an empty
folder costs Prefect and the store (~4 s of imports on a busy 2-core machine, against ~13 s).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attn_audit.flows.downstream import Downstream
from attn_audit.flows.request import DEFAULT_COMPUTE, AuditRequest, ComputeSpec
from attn_audit.storage.datasets import open_dataset
from attn_audit.storage.store import Store
from attn_audit.tasks.checkpoints import checkpoint_folders
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

if TYPE_CHECKING:
    from attn_audit.tasks.compare import ComparisonSummary

FINISHED = ("completed", "completed_with_errors")


@flow(name="watch-checkpoints", validate_parameters=True,
      description="Audit each new checkpoint on the previous checkpoint's samples and compare their explanations.")
def watch_checkpoints(folder: str | None = None, checkpoints: list[str] | None = None, data: str | None = None,
                      limit: int | None = None, methods: list[str] | None = None,
                      compute: ComputeSpec = DEFAULT_COMPUTE, top_k: float = 0.1) -> list[dict]:
    """`folder`: sub-folders holding complete checkpoints, natural name order; `checkpoints`: references (folders,
    builtin:NAME), looked at first. `data` / `limit` / `methods`: the first audit when the store has no baseline
    (and `data` restricts baselines to its dataset). `compute`: how every audit is computed and the store
    (flows.request.ComputeSpec). `top_k`: the fraction of positions of the comparison's top-k overlap."""
    log = get_run_logger()
    refs = [*(checkpoints or []), *(str(p) for p in (checkpoint_folders(folder) if folder else []))]
    Store.open(compute.store, create=True)  # fails early on a bad location
    first = {"data": data, "data_ref": open_dataset(data).ref if data else None, "limit": limit, "methods": methods}
    outcomes, failures = [], []
    for ref in refs:
        try:
            outcome = _look_at(ref, first, compute, top_k)
        except Exception as err:  # one bad checkpoint must not hide the others; the flow run fails at the end
            log.error("checkpoint %s: %s: %s", ref, type(err).__name__, err)
            failures.append(ref)
            continue
        log.info("checkpoint %s: %s", ref, outcome["action"])
        outcomes.append(outcome)
    if failures:
        raise RuntimeError(f"{len(failures)} checkpoint(s) failed: {', '.join(failures)} (see the log)")
    return outcomes


def _look_at(ref: str, first: dict, compute: ComputeSpec, top_k: float) -> dict:
    from attn_audit.flows.audit import audit
    from attn_audit.flows.plan import model_fingerprint
    from attn_audit.tasks.compare import load_comparison

    store = Store.open(compute.store)
    fingerprint = model_fingerprint(ref)  # what the audit's run records: a copy of a checkpoint is the same model
    baseline, done = _baseline_and_done(store, fingerprint, first["data_ref"])
    if done is not None and (baseline is None or load_comparison(store, done["run_id"], baseline["run_id"])):
        return {"checkpoint": ref, "action": "skipped: already audited", "run_id": done["run_id"]}
    if baseline is None and first["data"] is None:
        return {"checkpoint": ref, "action": "skipped: no baseline run in the store yet and no `data` to audit on"}
    request = _request(ref, store, baseline, first, compute)
    if baseline is None:  # the first checkpoint: it becomes the baseline of the next
        return {"checkpoint": ref, "action": "audited (first baseline)", "run_id": audit(request).run_id}
    jobs = Downstream(jobs=("evaluate", "compare", "report"), compare_with=baseline["run_id"], top_k=top_k)
    summary = audit(request, downstream=jobs)
    comparison = load_comparison(store, summary.run_id, baseline["run_id"])
    if comparison is None:
        return {"checkpoint": ref, "action": "audited; not compared (see the log)", "run_id": summary.run_id,
                "baseline_run_id": baseline["run_id"]}
    _artifact(comparison, ref)
    return {"checkpoint": ref, "action": "audited and compared", "run_id": summary.run_id,
            "baseline_run_id": baseline["run_id"], "comparison_id": comparison.comparison_id,
            "report": summary.paths.get("report")}


def _baseline_and_done(store: Store, fingerprint: str, data_ref: str | None) -> tuple[dict | None, dict | None]:
    """The finished run to compare the checkpoint with, and the checkpoint's own finished run (or None): the
    baseline is the latest run of another model (before the checkpoint's own run, when it has one)."""
    runs = [r for r in store.runs().to_pylist() if r["status"] in FINISHED]
    others = [r for r in runs if r["model_fingerprint"] != fingerprint]
    baseline = _latest(r for r in others if data_ref is None or r["dataset_ref"] == data_ref)
    scope = data_ref or (baseline["dataset_ref"] if baseline else None)
    done = _latest(r for r in runs if r["model_fingerprint"] == fingerprint and r["dataset_ref"] == scope)
    if done is not None:
        baseline = _latest(r for r in others if r["dataset_ref"] == scope and r["created_at"] < done["created_at"])
    return baseline, done


def _request(ref: str, store: Store, baseline: dict | None, first: dict, compute: ComputeSpec) -> AuditRequest:
    """The checkpoint's audit: on the baseline's samples and settings (the same sample ids), or on `data`."""
    if baseline is None:
        return AuditRequest(model=ref, data=first["data"], methods=first["methods"], limit=first["limit"],
                            compute=compute)
    config = store.run(baseline["run_id"]).config_dict
    return AuditRequest(model=ref, data=baseline["dataset_ref"], methods=first["methods"] or list(baseline["methods"]),
                        limit=config.get("limit"), target=config.get("target"), label_map=config.get("label_map"),
                        precision=config.get("precision"), truncate=config.get("truncate"),
                        relevance_dtype=config.get("relevance_dtype"), compute=compute)


def _latest(rows) -> dict | None:
    return max(rows, key=lambda r: (r["created_at"], r["run_id"]), default=None)


def _artifact(c: ComparisonSummary, ref: str) -> None:
    """The comparison on the flow run's page in the Prefect UI."""
    lines = [f"# `{ref}`: run `{c.run_id}` vs the baseline `{c.baseline_run_id}`", "",
             "| method | modality | agreement | mean [95% interval] | n |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['modality']} | {r['metric']} | {r['value']:.3f} [{r['ci_low']:.3f}, "
              f"{r['ci_high']:.3f}] | {r['n']} |" for r in c.maps]
    lines += ["", "| method | modality | metric | run − baseline [95% interval] | better |", "|---|---|---|---|---|"]
    lines += [f"| {r['method']} | {r['modality']} | {r['metric']} | {r['value']:+.3f} [{r['ci_low']:+.3f}, "
              f"{r['ci_high']:+.3f}] | {r['better'] or 'n.s.'} |" for r in c.deltas]
    create_markdown_artifact("\n".join(lines), key=f"compare-{c.run_id}-{c.baseline_run_id}",
                             description="explanation drift against the previous checkpoint")
