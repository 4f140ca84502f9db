"""The report's comparison section, for a run that was compared with a baseline (a previous checkpoint): map
agreement, metric deltas, prediction changes and the most-changed samples, drawn side by side."""

from __future__ import annotations

import html
from pathlib import Path

from attn_audit.storage.store import Store, render
from attn_audit.tasks.compare import ComparisonSummary, comparisons_of
from attn_audit.tasks.report.examples import file_safe, sample_image
from attn_audit.tasks.report.markup import table as _table


def comparison_sections(store: Store, run_id: str, out: Path, most_changed: int = 3) -> list[str]:
    """HTML parts, one section per baseline the run was compared with; none when it never was."""
    parts = []
    for c in comparisons_of(store, run_id, most_changed):
        parts += [f"<h2>Compared with run {html.escape(c.baseline_run_id)}</h2>",
                  "<p class='note'>Map agreement per sample (Spearman's rho of the two maps, share of shared top-k "
                  "positions), mean and bootstrap 95% interval over samples; metric deltas are this run − the "
                  "baseline on the same samples, with a paired bootstrap interval.</p>",
                  _table(("method", "modality", "agreement", "mean", "95% interval", "n"),
                         [(r["method"], r["modality"], r["metric"], _num(r["value"]), _interval(r), r["n"])
                          for r in c.maps])]
        if c.deltas:
            parts.append(_table(("method", "modality", "metric", "baseline", "this run", "difference",
                                 "95% interval", "n", "better"),
                                [(r["method"], r["modality"], r["metric"], _num(r["baseline_mean"]),
                                  _num(r["run_mean"]), _num(r["value"]), _interval(r), r["n"],
                                  r["better"] or "not significant") for r in c.deltas]))
        parts.append(_table(("predictions", "value", "95% interval", "n"),
                            [("changed (share)" if r["metric"] == "changed" else "accuracy difference",
                              _num(r["value"]), _interval(r), r["n"]) for r in c.predictions]))
        parts += ["<h3>Most-changed samples</h3>",
                  _table(("method", "modality", "sample", "rho", "top-k overlap", "target (baseline → run)"),
                         [(r["method"], r["modality"], r["sample_id"], _num(r.get("spearman")),
                           _num(r.get("top_k_overlap")), f"{r['baseline_target_index']} → {r['target_index']}")
                          for r in c.most_changed])]
        parts += _pictures(store, c, out)
    return parts


def _pictures(store: Store, c: ComparisonSummary, out: Path) -> list[str]:
    """Baseline and run maps of the most-changed image samples, over the input."""
    (out / "compare").mkdir(parents=True, exist_ok=True)
    run = store.run(c.run_id)
    figures = []
    for r in (r for r in c.most_changed if r["modality"] == "image"):
        before = store.load_explanations(c.baseline_run_id, method=r["method"], sample_ids=[r["sample_id"]])
        after = store.load_explanations(c.run_id, method=r["method"], sample_ids=[r["sample_id"]])
        if not before or not after:
            continue
        caption = f"{r['method']} · sample {r['sample_id']} · rho {_num(r.get('spearman'))}"
        name = f"compare/{file_safe(c.baseline_run_id)}-{r['method']}-{file_safe(r['sample_id'])}.png"
        render.save_panels(out / name, sample_image(store, run, r["sample_id"]),
                           [("baseline", before[0].relevance["image"]), ("this run", after[0].relevance["image"])])
        figures.append(f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'>"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return figures


def _num(value) -> str:
    return "—" if value is None or value != value else f"{value:.3f}"


def _interval(r: dict) -> str:
    return f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
