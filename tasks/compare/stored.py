"""Comparisons read back from the store: the latest comparison of a run with a baseline, summarised for the CLI,
the report and the checkpoint watcher."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pyarrow.compute as pc
from attn_audit.storage.store import Store


@dataclass
class ComparisonSummary:
    run_id: str  # the compared run (the new checkpoint)
    baseline_run_id: str
    comparison_id: str
    maps: list[dict] = field(default_factory=list)  # per method, modality, metric: mean [ci_low, ci_high], n
    deltas: list[dict] = field(default_factory=list)  # per method, metric, modality: run − baseline, interval
    predictions: list[dict] = field(default_factory=list)  # changed share; accuracy difference
    most_changed: list[dict] = field(default_factory=list)  # per method and modality, lowest rho first


def load_comparison(store: Store, run_id: str, baseline_run_id: str | None = None,
                    most_changed: int = 5) -> ComparisonSummary | None:
    """The latest stored comparison of `run_id` (with `baseline_run_id`, or with any baseline), or None."""
    table = store.table("comparisons", run_id=run_id)
    if baseline_run_id is not None:
        table = table.filter(pc.equal(table["baseline_run_id"], store.run(baseline_run_id).run_id))
    if not table.num_rows:
        return None
    newest = table.filter(pc.equal(table["created_at"], pc.max(table["created_at"])))["comparison_id"][0]
    table = table.filter(pc.equal(table["comparison_id"], newest))
    rows = [_row(r) for r in table.to_pylist()]
    first = rows[0]
    return ComparisonSummary(
        run_id=first["run_id"], baseline_run_id=first["baseline_run_id"], comparison_id=first["comparison_id"],
        maps=_sorted(r for r in rows if r["kind"] == "maps"),
        deltas=_sorted(r for r in rows if r["kind"] == "metric_delta"),
        predictions=sorted((r for r in rows if r["kind"] == "predictions"), key=lambda r: r["metric"] != "changed"),
        most_changed=_most_changed([r for r in rows if r["kind"] == "sample"], most_changed))


def comparisons_of(store: Store, run_id: str, most_changed: int = 5) -> list[ComparisonSummary]:
    """The latest comparison of `run_id` with each baseline it was compared with."""
    table = store.table("comparisons", run_id=run_id, columns=["baseline_run_id"])
    return [load_comparison(store, run_id, baseline, most_changed)
            for baseline in sorted(set(table["baseline_run_id"].to_pylist()))]


def _row(r: dict) -> dict:
    return {**r, **json.loads(r.pop("details") or "{}")}


def _sorted(rows) -> list[dict]:
    return sorted(rows, key=lambda r: (str(r["method"]), str(r["modality"]), r["metric"]))


def _most_changed(samples: list[dict], n: int) -> list[dict]:
    """Per (method, modality): the n samples whose maps agree least (lowest rho; constant maps, NaN, last)."""
    merged: dict[tuple, dict] = {}
    for r in samples:
        key = (r["method"], r["modality"], r["sample_id"], r["target_index"])
        merged.setdefault(key, {"method": r["method"], "modality": r["modality"], "sample_id": r["sample_id"],
                                "target_index": r["target_index"],
                                "baseline_target_index": r["baseline_target_index"]})[r["metric"]] = r["value"]
    groups: dict[tuple, list[dict]] = {}
    for row in merged.values():
        groups.setdefault((row["method"], row["modality"]), []).append(row)
    out = []
    for _, rows in sorted(groups.items()):
        rows.sort(key=lambda r: (_nan_last(r.get("spearman")), _nan_last(r.get("top_k_overlap")), r["sample_id"]))
        out += rows[:n]
    return out


def _nan_last(value: float | None) -> float:
    return math.inf if value is None or math.isnan(value) else value
