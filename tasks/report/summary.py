"""The report's summary: per modality, one row per method and the headline metrics as columns (mean and 95%
interval), the rank-1 entry of each column bold — the tables to read first; the long per-metric tables come after."""

from __future__ import annotations

import html

from attn_audit.tasks.evaluate.specs import metric_spec

# (metric, column title) in column order; a column appears when the run has the metric for that modality
HEADLINE = (("auc_positive", "positive AUC"), ("auc_positive_zero", "positive AUC, zeroed"),
            ("auc_negative", "negative AUC"), ("auc_negative_zero", "negative AUC, zeroed"),
            ("pointing_game", "pointing game"), ("auprc", "AUPRC"), ("bmeq_otsu", "BMEQ (Otsu)"),
            ("seg_iou", "segmentation IoU"))


def modalities_shown(summary: list[dict]) -> list[str]:
    """The modalities with results; `combined` only beside two or more others (with one it repeats it)."""
    found = sorted({r["modality"] for r in summary} - {"combined"})
    return found + (["combined"] if len(found) > 1 and any(r["modality"] == "combined" for r in summary) else [])


def headline(summary: list[dict], methods: list[str]) -> list[tuple[str, list[tuple[str, str]], dict]]:
    """Per shown modality: (modality, its headline columns [(metric, title)], {(method, metric): summary row})."""
    rows = {(r["method"], r["modality"], r["metric"]): r for r in summary}
    out = []
    for modality in modalities_shown(summary):
        columns = [(metric, title) for metric, title in HEADLINE
                   if any((m, modality, metric) in rows for m in methods)]
        if columns:
            out.append((modality, columns, {(m, metric): rows[(m, modality, metric)] for m in methods
                                            for metric, _ in columns if (m, modality, metric) in rows}))
    return out


def summary_table(summary: list[dict], methods: list[str]) -> str:
    """HTML: per modality, a table of methods × headline metrics."""
    tables = []
    for modality, columns, rows in headline(summary, methods):
        head = "".join(f"<th>{html.escape(title)} {arrow(metric)}</th>" for metric, title in columns)
        body = [f"<tr><th>{html.escape(method)}</th>"
                + "".join(_cell(metric, rows.get((method, metric))) for metric, _ in columns) + "</tr>"
                for method in methods]
        tables.append(f"<table class='summary'><caption>{html.escape(modality)}</caption><tr><th>method</th>{head}"
                      f"</tr>{''.join(body)}</table>")
    return "".join(tables) or "<p class='note'>No aggregate results in the store for this run yet.</p>"


def _cell(metric: str, r: dict | None) -> str:
    if r is None:
        return "<td class='n'>—</td>"
    mean, interval = mean_and_interval(metric, r)
    text = f"{mean}<br><span class='ci'>{interval}</span>"
    return f"<td class='n'>{'<b>' + text + '</b>' if r.get('rank') == 1 else text}</td>"


def mean_and_interval(metric: str, r: dict) -> tuple[str, str]:
    """A summary row's mean and its "[low, high]" interval, formatted for the metric."""
    return value_text(metric, r["mean"]), f"[{value_text(metric, r['ci_low'])}, {value_text(metric, r['ci_high'])}]"


def arrow(metric: str) -> str:
    return "↑" if metric_spec(metric).higher_is_better else "↓"


def value_text(metric: str, value) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:.1f}" if metric.startswith(("auc_", "prob_auc_")) else f"{value:.3f}"
