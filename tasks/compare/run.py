"""`compare_runs`: how the explanations of a run (a new checkpoint) differ from a baseline run (the previous
checkpoint) on the samples both explained — read from the store, written back to its `comparisons` table.

    summary = compare_runs("out/store", baseline="3f2a", run="9c1e")

Samples pair by sample id and the order of their targets (one target each under the `predicted` policy, so a
sample whose prediction changed is still compared: both targets are kept). Rows (storage.tables.COMPARISONS):
- `sample`: per sample, method and modality, Spearman's rho and the top-k overlap of the two maps;
- `maps`: their means over samples with a bootstrap 95% interval;
- `metric_delta`: per method, metric and modality, the mean per-sample difference run − baseline of the
  evaluation's metrics (default evaluation settings) with a paired bootstrap interval;
- `predictions`: the share of samples whose prediction changed, and the accuracy difference.
The comparison id hashes the rows, so comparing the same runs again writes nothing new; comparing after more
evaluation has landed writes a new comparison (readers take the latest). Maps are read one method at a time: memory
holds one method's maps of both runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from attn_audit.models import AttnAuditError
from attn_audit.models.loading import checkpoint_class_names
from attn_audit.storage.store import RunInfo, Store
from attn_audit.storage.tables import COMPARISONS
from attn_audit.tasks.compare.maps import comparable, rank_correlation, top_k, top_k_overlap
from attn_audit.tasks.compare.stored import ComparisonSummary, load_comparison
from attn_audit.tasks.evaluate.aggregate import current_sample_rows
from attn_audit.tasks.evaluate.settings import EvalSettings
from attn_audit.tasks.evaluate.specs import metric_spec
from attn_audit.tasks.evaluate.stats import bootstrap_ci, paired_difference


@dataclass(frozen=True)
class CompareSettings:
    top_k: float = 0.1  # the top-k overlap compares the ceil(top_k · n) most relevant positions of each map
    resamples: int = 1000  # bootstrap
    seed: int = 0

    def __post_init__(self):
        if not 0 < self.top_k <= 1 or self.resamples < 1:
            raise AttnAuditError("need 0 < top_k ≤ 1 and resamples ≥ 1")


@dataclass(frozen=True)
class Pair:
    sample_id: str
    target: int  # the run's
    baseline_target: int
    changed: bool  # the prediction differs
    correct: float  # 1 / 0, NaN when unlabelled
    baseline_correct: float


def compare_runs(store: str | Store, baseline: str, run: str, settings: CompareSettings | None = None,
                 most_changed: int = 5) -> ComparisonSummary:
    """Compare run `run` with run `baseline` (ids or unique prefixes), store the rows once, and return the
    stored comparison with the `most_changed` samples (lowest rho) per method and modality."""
    store = store if isinstance(store, Store) else Store.open(store)
    settings = settings or CompareSettings()
    a, b = store.run(baseline), store.run(run)
    if a.run_id == b.run_id:
        raise AttnAuditError(f"give two different runs (both are {a.run_id})")
    methods = [m for m in b.methods if m in a.methods]
    if not methods:
        raise AttnAuditError(f"runs {a.run_id} ({', '.join(a.methods)}) and {b.run_id} ({', '.join(b.methods)}) "
                             "have no method in common")
    pairs = _pairs(store, a, b)
    if not pairs:
        raise AttnAuditError(f"runs {a.run_id} and {b.run_id} have no explained sample in common")
    parts = [_map_rows(store, a, b, method, pairs, settings) for method in methods]
    parts += [_delta_rows(store, a, b, methods, pairs, settings), _prediction_rows(pairs, settings)]
    table = _fill(pa.concat_tables(parts), run_id=b.run_id, baseline_run_id=a.run_id)
    comparison_id = _content_id(table, settings)
    table = _fill(table, comparison_id=comparison_id, created_at=datetime.now(timezone.utc))
    store.append("comparisons", table, key=f"{b.run_id}:compare:{a.run_id}:{comparison_id}")
    return load_comparison(store, b.run_id, a.run_id, most_changed)


def _pairs(store: Store, a: RunInfo, b: RunInfo) -> list[Pair]:
    """Samples both runs explained, their targets matched in order (see the module docstring)."""
    def targets(run: RunInfo) -> dict[str, list[dict]]:
        rows = store.predictions(run_id=run.run_id, columns=["sample_id", "target_index", "prediction", "correct"])
        out: dict[str, list[dict]] = {}
        for r in sorted(rows.to_pylist(), key=lambda r: (r["sample_id"], _or_minus_one(r["target_index"]))):
            out.setdefault(r["sample_id"], []).append(r)
        return out

    def correct(row: dict) -> float:
        return float("nan") if row["correct"] is None else float(row["correct"])

    ta, tb = targets(a), targets(b)
    name_a, name_b = _prediction_names(a, b)
    return [Pair(sid, rb["target_index"], ra["target_index"], name_b(rb["prediction"]) != name_a(ra["prediction"]),
                 correct(rb), correct(ra))
            for sid in sorted(ta.keys() & tb.keys()) for ra, rb in zip(ta[sid], tb[sid])]


def _prediction_names(a: RunInfo, b: RunInfo):
    """How to compare the two runs' predictions: by class name when both checkpoints name their classes (two
    checkpoints may order them differently), else by index."""
    def names(run: RunInfo) -> list[str] | None:
        try:
            return checkpoint_class_names(run.model_ref)
        except (AttnAuditError, OSError, ValueError):  # the checkpoint is gone or unreadable: indices only
            return None

    na, nb = names(a), names(b)
    if not na or not nb:
        return (lambda i: i), (lambda i: i)

    def namer(classes: list[str]):
        return lambda i: classes[i] if i is not None and 0 <= i < len(classes) else i

    return namer(na), namer(nb)


def _or_minus_one(target: int | None) -> int:
    """A sample without a target (a many-target model that found none) sorts first."""
    return -1 if target is None else target


def _map_rows(store: Store, a: RunInfo, b: RunInfo, method: str, pairs: list[Pair],
              settings: CompareSettings) -> pa.Table:
    """Per-sample agreement of one method's maps (every modality), and its means."""
    ids = [p.sample_id for p in pairs]
    maps_a = {(x.sample_id, x.target): x for x in store.load_explanations(a.run_id, method=method, sample_ids=ids)}
    maps_b = {(x.sample_id, x.target): x for x in store.load_explanations(b.run_id, method=method, sample_ids=ids)}
    by_length: dict[tuple[str, int], list[tuple[Pair, np.ndarray, np.ndarray]]] = {}
    for p in pairs:
        xa, xb = maps_a.get((p.sample_id, p.baseline_target)), maps_b.get((p.sample_id, p.target))
        if xa is None or xb is None:
            continue
        for modality in xb.relevance.keys() & xa.relevance.keys():
            va = comparable(xa.relevance[modality], xa.special.get(modality))
            vb = comparable(xb.relevance[modality], xb.special.get(modality))
            if va.size == vb.size and va.size:  # a changed tokenisation leaves nothing to pair position-wise
                by_length.setdefault((modality, va.size), []).append((p, va, vb))
    parts = []
    values: dict[tuple[str, str], list[np.ndarray]] = {}
    for (modality, n), group in sorted(by_length.items()):
        va, vb = np.stack([g[1] for g in group]), np.stack([g[2] for g in group])
        scores = {"spearman": rank_correlation(va, vb),
                  "top_k_overlap": top_k_overlap(va, vb, top_k(n, settings.top_k))}
        for metric, v in scores.items():
            values.setdefault((modality, metric), []).append(v)
            parts.append(_rows(len(group), kind="sample", method=method, modality=modality, metric=metric,
                               sample_id=[g[0].sample_id for g in group], target_index=[g[0].target for g in group],
                               baseline_target_index=[g[0].baseline_target for g in group], value=v))
    for (modality, metric), chunks in sorted(values.items()):
        ci = bootstrap_ci(np.concatenate(chunks), settings.resamples, settings.seed)
        parts.append(_rows(1, kind="maps", method=method, modality=modality, metric=metric, value=ci.mean,
                           ci_low=ci.low, ci_high=ci.high, n=ci.n,
                           details={"top_k": settings.top_k} if metric == "top_k_overlap" else None))
    return pa.concat_tables(parts) if parts else COMPARISONS.empty_table()


def _delta_rows(store: Store, a: RunInfo, b: RunInfo, methods: list[str], pairs: list[Pair],
                settings: CompareSettings) -> pa.Table:
    """Per method, metric and modality: mean of run − baseline over the pairs both runs evaluated."""
    evaluation = EvalSettings()

    def per_sample(run: RunInfo) -> dict[tuple, float]:
        rows = current_sample_rows(store.metrics(run_id=run.run_id), evaluation).to_pylist()
        return {(r["method"], r["metric"], r["modality"], r["sample_id"], r["target_index"]): r["value"]
                for r in rows if r["method"] in methods}

    va, vb = per_sample(a), per_sample(b)
    parts = []
    for method, metric, modality in sorted({k[:3] for k in va} & {k[:3] for k in vb}, key=str):
        both = [(va[(method, metric, modality, p.sample_id, p.baseline_target)],
                 vb[(method, metric, modality, p.sample_id, p.target)]) for p in pairs
                if (method, metric, modality, p.sample_id, p.baseline_target) in va
                and (method, metric, modality, p.sample_id, p.target) in vb]
        if not both:
            continue
        old, new = np.array(both).T
        diff = paired_difference(new, old, settings.resamples, settings.seed)
        better = metric_spec(metric).higher_is_better
        verdict = "" if diff.n == 0 or diff.contains(0.0) else ("run" if (diff.mean > 0) == better else "baseline")
        parts.append(_rows(1, kind="metric_delta", method=method, modality=modality, metric=metric, value=diff.mean,
                           ci_low=diff.low, ci_high=diff.high, n=diff.n,
                           details={"baseline_mean": float(np.nanmean(old)), "run_mean": float(np.nanmean(new)),
                                    "higher_is_better": better, "better": verdict}))
    return pa.concat_tables(parts) if parts else COMPARISONS.empty_table()


def _prediction_rows(pairs: list[Pair], settings: CompareSettings) -> pa.Table:
    changed = bootstrap_ci(np.array([p.changed for p in pairs], float), settings.resamples, settings.seed)
    parts = [_rows(1, kind="predictions", metric="changed", value=changed.mean, ci_low=changed.low,
                   ci_high=changed.high, n=changed.n)]
    new, old = np.array([p.correct for p in pairs]), np.array([p.baseline_correct for p in pairs])
    accuracy = paired_difference(new, old, settings.resamples, settings.seed)
    if accuracy.n:
        parts.append(_rows(1, kind="predictions", metric="accuracy", value=accuracy.mean, ci_low=accuracy.low,
                           ci_high=accuracy.high, n=accuracy.n,
                           details={"baseline_mean": float(np.nanmean(old)), "run_mean": float(np.nanmean(new))}))
    return pa.concat_tables(parts)


def _rows(count: int, **columns) -> pa.Table:
    """`count` rows of the comparisons table: list / array columns as given, scalars repeated, the rest null (run ids,
    comparison id and time are filled in once every row is known)."""
    data = {}
    for field in COMPARISONS:
        value = columns.get(field.name)
        if isinstance(value, dict):
            value = json.dumps(value, sort_keys=True)
        if value is None or isinstance(value, str | int | float):
            data[field.name] = pa.array([value] * count, field.type)
        else:
            data[field.name] = pa.array(np.asarray(value) if isinstance(value, np.ndarray) else value, field.type)
    return pa.table(data, schema=COMPARISONS)


def _fill(table: pa.Table, **columns) -> pa.Table:
    """Set whole columns to one value."""
    for name, value in columns.items():
        table = table.set_column(table.schema.get_field_index(name), name,
                                 pa.array([value] * table.num_rows, COMPARISONS.field(name).type))
    return table


def _content_id(table: pa.Table, settings: CompareSettings) -> str:
    """Hash of the computed rows (run ids included) and the settings: the same comparison gets the same id."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    digest.update(sink.getvalue().to_pybytes())
    return digest.hexdigest()[:16]
