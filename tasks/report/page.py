"""`write_report`: one static HTML page (+ PNGs beside it) for a run — provenance, results with intervals,
perturbation curves per modality and test, localisation, example heatmaps, and the comparison with a previous
checkpoint's run where one was made. No script, no network: it opens offline from the folder."""

from __future__ import annotations

import html
import json
from pathlib import Path

from attn_audit.storage.store import Store
from attn_audit.storage.store.render import TOKEN_STYLE
from attn_audit.tasks.evaluate.aggregate import stored_notes, stored_summary
from attn_audit.tasks.evaluate.specs import metric_spec
from attn_audit.tasks.report.comparison import comparison_sections
from attn_audit.tasks.report.examples import Example, draw
from attn_audit.tasks.report.markup import table as _table
from attn_audit.tasks.report.plots import save_line_chart
from attn_audit.tasks.report.summary import summary_table

STYLE = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;color:#222}table{border-collapse:collapse;"
         "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}"
         "td.n{text-align:right}tr.best td{font-weight:bold}img{margin:4px;border:1px solid #ddd}"
         ".note{color:#666}figure.text{margin:1em 0}table.summary th{white-space:nowrap}span.ci{color:#666;"
         "font-size:85%}table.summary caption{text-align:left;font-weight:bold;padding:4px 0}"
         "details{margin:0.5em 0}summary{cursor:pointer;color:#245}" + TOKEN_STYLE)
NOT_RUN = {"sanity": "The sanity check was not run: the evaluation's --tests left it out, or the run was evaluated "
                     "before it ran by default (`attn-audit evaluate --store STORE --run RUN --tests sanity` adds it, "
                     "then `attn-audit report`).",
           "localisation": "No localisation results: the evaluation's --tests left it out (a dataset without ground "
                           "truth for this model's maps is listed as skipped, with the reason)."}
REMOVED = {"image": "image patches / regions", "text": "text tokens"}  # what a perturbation test removes, per modality
RESULT_COLUMNS = ("metric", "modality", "rank", "method", "mean", "95% interval", "n",
                  "not significantly different from")


def _results(summary: list[dict], test: str, skipped: list[str]) -> str:
    """Every metric of `test`, per modality and method, ranked: folded (the summary table heads the page); then
    what the test skipped and why."""
    rows = [r for r in summary if metric_spec(r["metric"]).test == test]
    why = f"<ul class='note'>{''.join(f'<li>{html.escape(line)}</li>' for line in skipped)}</ul>" if skipped else ""
    if not rows:
        return why or f"<p class='note'>{html.escape(NOT_RUN.get(test, f'No {test} results in the store.'))}</p>"
    cells = [(f"{r['metric']} {'↑' if r['higher_is_better'] else '↓'}", r["modality"], r["rank"], r["method"],
              f"{r['mean']:.3f}", f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]", r["n"],
              ", ".join(r["not_significant_vs"])) for r in rows]
    table = _table(RESULT_COLUMNS, cells, ["best" if r.get("rank") == 1 else "" for r in rows])
    return f"<details><summary>every {test} metric ({len(rows)} rows)</summary>{table}</details>{why}"


def _curves(store: Store, run_id: str, out: Path) -> list[str]:
    """One PNG per (modality, perturbation test, quantity): the dataset curve of every method."""
    rows = [r for r in store.perturbation_curves(run_id=run_id).to_pylist() if r["sample_id"] is None]
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        groups.setdefault((r["modality"], r["perturbation"]), {}).setdefault(r["method"], []).append(r)
    files = []
    for (modality, test), by_method in sorted(groups.items()):
        for quantity in ("accuracy", "probability"):
            series = {}
            for method, points in sorted(by_method.items()):
                points = sorted({p["step"]: p for p in points}.values(), key=lambda p: p["step"])
                series[method] = ([p["fraction"] for p in points], [p[quantity] for p in points])
            name = f"curve-{modality}-{test}-{quantity}.png"
            removed = REMOVED.get(modality, f"{modality} tokens")
            save_line_chart(out / name, series, f"{modality}: {test} perturbation", f"fraction of {removed} removed",
                            "accuracy" if quantity == "accuracy" else "target probability",
                            ylim=(0.0, 1.0) if quantity == "accuracy" else None)
            files.append(name)
    return files


def _provenance(run) -> str:
    # The audit writes its report before it closes the run: every shard is in, the status still says running.
    status = "all shards committed (the audit closes the run after its report)" \
        if run.status == "running" and run.shards_committed == run.num_shards else run.status
    fields = [("run", run.run_id), ("status", status), ("model", run.model_ref),
              ("model fingerprint", run.model_fingerprint[:16]), ("dataset", run.dataset_ref),
              ("dataset fingerprint", run.dataset_fingerprint[:16]), ("methods", ", ".join(run.methods)),
              ("config", json.dumps(run.config_dict, sort_keys=True)), ("code", run.code_version),
              ("samples", f"{run.samples_done:,} of {run.num_samples:,}"), ("created", run.created_at)]
    return _table(("what", "value"), fields)


def _examples(examples: list[Example]) -> str:
    if not examples:
        return "<p class='note'>No per-sample results to pick examples from.</p>"
    parts = []
    for ex in examples:  # one figure per example: its image map, its text map, one caption
        label = html.escape(ex.caption)
        image = f"<img src='{html.escape(ex.file)}' alt='{label}'>" if ex.file else ""
        parts.append(f"<figure class='text'>{image}{ex.markup or ''}<figcaption>{label}</figcaption></figure>")
    return "".join(parts)


def write_report(store: Store | str, run_id: str, out: str | Path, examples_per_side: int = 1) -> Path:
    """Write `out/index.html` (+ images) for run `run_id`; returns the page's path."""
    store = store if isinstance(store, Store) else Store.open(store)
    run = store.run(run_id)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = stored_summary(store, run.run_id)
    curves = _curves(store, run.run_id, out)
    examples = draw(store, run.run_id, out, examples_per_side)
    skipped = stored_notes(store, run.run_id)
    body = [f"<h1>attn-audit report — run {html.escape(run.run_id)}</h1>", "<h2>Summary</h2>",
            "<p class='note'>Mean [bootstrap 95% interval over samples]; AUCs × 100; bold: rank 1 of the column (ties "
            "within the interval are listed in the tables below).</p>", summary_table(summary, list(run.methods)),
            "<h2>Provenance</h2>", _provenance(run),
            "<h2>Perturbation tests</h2><p class='note'>AUC × 100 of accuracy vs fraction removed; positive: lower "
            "is better, negative: higher is better. Bold: rank 1. Intervals: bootstrap 95% over samples.</p>",
            _results(summary, "perturbation", skipped.lines("perturbation"))]
    body += [f"<img src='{html.escape(f)}' alt='{html.escape(f)}'>" for f in curves]
    body += ["<h2>Localisation</h2>", _results(summary, "localisation", skipped.lines("localisation")),
             "<h2>Sanity check</h2>", _results(summary, "sanity", skipped.lines("sanity")), "<h2>Examples</h2>",
             _examples(examples)]
    body += comparison_sections(store, run.run_id, out)  # when the run was compared with a previous checkpoint
    page = out / "index.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>attn-audit {html.escape(run.run_id)}"
                    f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>", encoding="utf-8")
    return page
