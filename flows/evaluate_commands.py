"""`attn-audit evaluate`: the downstream evaluation jobs on a stored run (tasks.evaluate), as a command."""

from __future__ import annotations

import argparse

from attn_audit.flows.terminal import literal
from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)

EPILOG = """\
tests: perturbation (positive / negative, per modality), localisation (BMEQ, AUPRC, pointing game, on data
with ground truth), sanity (cascading randomisation on the run's first 32 samples: re-explains them once per
randomised layer). All three by default.
Results go to the store's `metrics` and `perturbation_curves` tables; rerunning skips what is committed.

example:
  attn-audit evaluate --store out/store --run 3f2a --tests perturbation,localisation --limit 1000
"""


def register(sub) -> None:
    """Add `evaluate` to the `attn-audit` sub-command parser."""
    from attn_audit.tasks.evaluate.settings import DEFAULT_TESTS, TESTS

    p = sub.add_parser("evaluate", help="perturbation tests, localisation and sanity checks on a stored run",
                       description="Evaluate a stored run's explanations (docs/evaluation.md) and print the "
                       "aggregate table: mean with a bootstrap 95% interval and the method ranking per metric.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="out/store", help="store folder or URI (default out/store)")
    p.add_argument("--run", required=True, help="run id (or a unique prefix of it)")
    p.add_argument("--tests", default=",".join(DEFAULT_TESTS),
                   help=f"comma-separated, of {', '.join(TESTS)} (default {','.join(DEFAULT_TESTS)})")
    p.add_argument("--methods", help="comma-separated methods (default: every method of the run)")
    p.add_argument("--limit", type=int, help="evaluate only the first N samples of the run")
    p.add_argument("--perturbation-mode", default="drop", choices=("drop", "zero"),
                   help="ViT patches: drop their tokens (default) or zero their pixels (the reference protocol)")
    p.add_argument("--batch-size", type=int, default=32, help="samples perturbed together (default 32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--quiet", action="store_true", help="no table, only the notes")
    p.set_defaults(handler=_evaluate)


def _evaluate(args) -> int:
    from attn_audit.models import AttnAuditError
    from attn_audit.storage.store import StoreError
    from attn_audit.tasks.evaluate import evaluate_run

    methods = [m for m in (args.methods or "").split(",") if m] or None
    try:
        summary = evaluate_run(args.store, args.run, tests=args.tests, methods=methods, limit=args.limit,
                               batch_size=args.batch_size, device=args.device,
                               perturbation_mode=args.perturbation_mode)
    except StoreError as err:
        raise AttnAuditError(str(err)) from None
    if not args.quiet:
        console.print(results_table(summary))
    for note in summary.notes:
        err_console.print(f"[yellow]note:[/] {literal(note)}", soft_wrap=True)
    return 0


def results_table(summary) -> Table:
    return ranked_table(summary.results, f"attn-audit evaluate — run {literal(summary.run_id)} ({summary.chunks} "
                        f"chunks, {summary.chunks_skipped} already done, {summary.seconds:.1f} s)")


def headline_tables(results: list[dict], methods: list[str], title: str) -> list[Table]:
    """Per modality, methods × the headline metrics (tasks.report.summary), mean and interval, rank 1 bold: the
    tables that fit a terminal; the report has every metric ranked."""
    from attn_audit.tasks.report.summary import arrow, headline, mean_and_interval

    tables = []
    for modality, columns, rows in headline(results, methods):
        table = Table(title=f"{title} · {literal(modality)}")
        table.add_column("method", no_wrap=True)
        for metric, name in columns:
            table.add_column(f"{name} {arrow(metric)}", justify="right", overflow="fold")
        for method in methods:
            cells = []
            for metric, _ in columns:
                r = rows.get((method, metric))
                text = "—" if r is None else "\n".join(mean_and_interval(metric, r))  # the interval below the mean
                cells.append(f"[bold]{text}[/]" if r is not None and r.get("rank") == 1 else text)
            table.add_row(literal(method), *cells)
        tables.append(table)
    return tables


def ranked_table(results: list[dict], title: str) -> Table:
    """One row per (metric, modality, method), best method first; ↑/↓ = the metric's better direction. `title`
    is markup; the stored values are printed literally."""
    table = Table(title=title)
    for col in ("metric", "modality", "rank", "method", "mean [95% interval]", "n", "not significant vs"):
        table.add_column(col, justify="right" if col in ("rank", "n") else "left", overflow="fold")
    for r in results:
        table.add_row(f"{literal(r['metric'])} {'↑' if r['higher_is_better'] else '↓'}", literal(r["modality"]),
                      str(r["rank"]), literal(r["method"]),
                      f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]", str(r["n"]),
                      literal(", ".join(r["not_significant_vs"])))
    return table
