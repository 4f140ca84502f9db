"""`attn-audit report`: one static, offline HTML page (+ images) for a run (tasks.report)."""

from __future__ import annotations

from attn_audit.flows.terminal import literal
from rich.console import Console

console = Console()


def register(sub) -> None:
    """Add `report` to the `attn-audit` sub-command parser."""
    p = sub.add_parser("report", help="write an offline HTML report of a run (after `evaluate`)",
                       description="Write DIR/index.html with PNGs beside it: run provenance, the evaluation's "
                       "results with intervals, perturbation curves, localisation, sanity check and example "
                       "heatmaps (best and worst sample per method). Run `attn-audit evaluate` first.")
    p.add_argument("--store", default="out/store", help="store folder or URI (default out/store)")
    p.add_argument("--run", required=True, help="run id (or a unique prefix of it)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--examples", type=int, default=1, help="best and worst samples shown per method (default 1)")
    p.set_defaults(handler=_report)


def _report(args) -> int:
    from attn_audit.models import AttnAuditError
    from attn_audit.storage.store import StoreError
    from attn_audit.tasks.report import write_report

    try:
        page = write_report(args.store, args.run, args.out, args.examples)
    except StoreError as err:
        raise AttnAuditError(str(err)) from None
    console.print(f"wrote {literal(page)}", soft_wrap=True)
    return 0
