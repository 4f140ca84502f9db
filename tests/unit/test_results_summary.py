"""The headline results (tasks/report/summary.py), in the report's HTML and on the terminal: per modality, methods
× headline metrics with intervals, rank 1 bold, `combined` only beside two modalities, and a terminal table that fits
80 columns."""

from __future__ import annotations

from attn_audit.flows.evaluate_commands import headline_tables
from attn_audit.tasks.report.summary import summary_table
from rich.console import Console


def row(method, metric, modality, mean, rank):
    return {"method": method, "metric": metric, "modality": modality, "mean": mean, "ci_low": mean - 1,
            "ci_high": mean + 1, "rank": rank, "n": 10, "higher_is_better": metric != "auc_positive",
            "not_significant_vs": []}


def rows(modalities):
    out = []
    for modality in modalities:
        out += [row("chefer2021", "auc_positive", modality, 20.0, 1), row("rollout", "auc_positive", modality, 30.0, 2),
                row("chefer2021", "auprc", modality, 0.5, 2), row("rollout", "auprc", modality, 0.7, 1)]
    return out


def test_one_modality_shows_no_combined_twin_and_bolds_rank_one():
    page = summary_table(rows(["image", "combined"]), ["chefer2021", "rollout"])
    assert "<caption>image</caption>" in page and "combined" not in page
    assert "<b>20.0<br><span class='ci'>[19.0, 21.0]</span></b>" in page and "<b>0.700" in page
    assert "positive AUC ↓" in page and "AUPRC ↑" in page


def test_two_modalities_get_a_table_each_and_combined():
    page = summary_table(rows(["image", "text", "combined"]), ["chefer2021", "rollout"])
    assert page.count("<table") == 3 and "<caption>combined</caption>" in page


def test_the_terminal_tables_fit_80_columns():
    console = Console(width=80, record=True)
    tables = headline_tables(rows(["image", "text", "combined"]), ["chefer2021", "rollout"], "results")
    assert len(tables) == 3
    for table in tables:
        console.print(table)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80 and "[19.0, 21.0]" in text and "combined" in text
