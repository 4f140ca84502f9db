"""`attn-audit compare`: how the explanations of two runs (two checkpoints) differ on their shared samples
(tasks.compare), stored in the `comparisons` table and printed."""

from __future__ import annotations

import argparse

from attn_audit.flows.terminal import literal
from rich.console import Console
from rich.table import Table

console = Console()

EPILOG = """\
The first --run is the baseline (e.g. the previous checkpoint), the second the run compared with it; deltas are
second − first. Samples pair by sample id (under --target predicted a sample whose prediction changed is still
compared; both targets are shown). Evaluate both runs first (`attn-audit audit` does) to get metric deltas.
Rows go to the store's `comparisons` table (kind = sample | maps | metric_delta | predictions); comparing the
same runs again writes nothing new.

example:
  attn-audit compare --store out/store --run 3f2a --run 9c1e
  attn-audit query --store out/store "SELECT * FROM comparisons WHERE kind = 'sample' ORDER BY value LIMIT 10"
"""


def register(sub) -> None:
    """Add `compare` to the `attn-audit` sub-command parser."""
    p = sub.add_parser("compare", help="compare the explanations of two runs (e.g. two checkpoints)",
                       description="Per sample, method and modality: Spearman rank correlation and top-k overlap of "
                       "the two runs' maps; per method and modality: the evaluation metrics' differences with "
                       "paired bootstrap 95% intervals; prediction changes; the most-changed samples.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", default="out/store", help="store folder or URI (default out/store)")
    p.add_argument("--run", action="append", required=True, metavar="RUN",
                   help="run id or unique prefix; give it twice: the baseline, then the run compared with it")
    p.add_argument("--top-k", type=float, default=0.1,
                   help="fraction of each map's positions in the top-k overlap (default 0.1: the top 10%%)")
    p.add_argument("--most-changed", type=int, default=5,
                   help="samples shown per method and modality, lowest rank correlation first (default 5)")
    p.set_defaults(handler=_compare)


def _compare(args) -> int:
    from attn_audit.models import AttnAuditError
    from attn_audit.storage.store import StoreError
    from attn_audit.tasks.compare import CompareSettings, compare_runs

    if len(args.run) != 2:
        raise AttnAuditError(f"give --run exactly twice (the baseline, then the run to compare), got {len(args.run)}")
    try:
        c = compare_runs(args.store, baseline=args.run[0], run=args.run[1], settings=CompareSettings(top_k=args.top_k),
                         most_changed=args.most_changed)
    except StoreError as err:
        raise AttnAuditError(str(err)) from None
    console.print(f"run {literal(c.run_id)} vs baseline {literal(c.baseline_run_id)} (comparison "
                  f"{literal(c.comparison_id)})", soft_wrap=True)
    console.print(_table("map agreement", ("method", "modality", "agreement", "mean [95% interval]", "n"),
                         [(r["method"], r["modality"], r["metric"], _interval(r), r["n"]) for r in c.maps]))
    if c.deltas:
        console.print(_table("metric deltas (run − baseline)",
                             ("method", "modality", "metric", "baseline", "run", "difference [95% interval]", "n",
                              "better"),
                             [(r["method"], r["modality"], r["metric"], f"{r['baseline_mean']:.3f}",
                               f"{r['run_mean']:.3f}", _interval(r, signed=True), r["n"],
                               r["better"] or "not significant") for r in c.deltas]))
    console.print(_table("predictions", ("", "value [95% interval]", "n"),
                         [("changed (share)" if r["metric"] == "changed" else "accuracy (run − baseline)",
                           _interval(r, signed=r["metric"] != "changed"), r["n"]) for r in c.predictions]))
    names = _target_names(args.store, c)
    console.print(_table("most-changed samples", ("method", "modality", "sample", "rho", "top-k overlap",
                                                  "target (baseline → run)"),
                         [(r["method"], r["modality"], r["sample_id"], _num(r.get("spearman")),
                           _num(r.get("top_k_overlap")),
                           f"{names.get((c.baseline_run_id, r['sample_id'], r['baseline_target_index']), '?')} → "
                           f"{names.get((c.run_id, r['sample_id'], r['target_index']), '?')}")
                          for r in c.most_changed]))
    return 0


def _target_names(store_uri: str, c) -> dict[tuple, str]:
    """(run, sample, target index) -> "class name (index)" of the most-changed samples' targets, from the runs'
    predictions (a token or a detection's class for many-target models)."""
    from attn_audit.storage.store import Store

    store, samples = Store.open(store_uri), sorted({r["sample_id"] for r in c.most_changed})
    names = {}
    for run_id in (c.baseline_run_id, c.run_id):
        rows = store.predictions(run_id=run_id, sample_ids=samples).select(
            ["sample_id", "target_index", "target_label"]).to_pylist() if samples else []
        for r in rows:
            label = r["target_label"]
            names[(run_id, r["sample_id"], r["target_index"])] = \
                f"{label} ({r['target_index']})" if label is not None else str(r["target_index"])
    return names


def _table(title: str, columns, rows) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col == "n" else "left", overflow="fold")
    for row in rows:
        table.add_row(*(literal(cell) for cell in row))  # stored values (sample ids) printed as they are
    return table


def _num(value, signed: bool = False) -> str:
    return "—" if value is None or value != value else f"{value:+.3f}" if signed else f"{value:.3f}"


def _interval(r: dict, signed: bool = False) -> str:
    return f"{_num(r['value'], signed)} [{_num(r['ci_low'], signed)}, {_num(r['ci_high'], signed)}]"
