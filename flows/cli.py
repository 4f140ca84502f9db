"""The `attn-audit` command line."""

from __future__ import annotations

import argparse
import sys

from rich.console import Console
from rich.table import Table

import models
from flows import store_commands
from storage.datasets import DatasetError

console = Console()
err_console = Console(stderr=True)

DESCRIPTION = """\
Explain Transformer predictions at dataset scale with the relevancy maps of Chefer, Gur & Wolf
(ICCV 2021) and the usual baselines, on stock Hugging Face models.

data references:  builtin:NAME   imagefolder:PATH   jsonl:PATH   csv:PATH   parquet:PATH
model references: builtin:NAME   a local checkpoint folder (safetensors)   a hub id (when online)
"""

EXAMPLES = """\
examples:
  attn-audit explain --model builtin:fashion-vit --data builtin:fashion-canvas --limit 100
  attn-audit explain --model ./my-bert --data jsonl:reviews.jsonl --method chefer2021 --method rollout
  attn-audit methods
"""


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="compute relevancy maps for a dataset into the explanation store",
                       description="Compute relevancy maps for every sample of a dataset. Writes a run into "
                       "the store at --store: explanations (long format: one row per sample × method × "
                       "modality), predictions and errors, one commit per shard; rerunning resumes.",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="builtin:NAME, a checkpoint folder, or a hub id")
    p.add_argument("--data", required=True, help="builtin:NAME, imagefolder:PATH, jsonl:PATH, csv:PATH or parquet:PATH")
    p.add_argument("--method", action="append", dest="methods", metavar="NAME",
                   help=f"repeatable; default chefer2021. Available: {', '.join(models.available_methods())}")
    p.add_argument("--target", default="predicted",
                   help="class to explain: 'predicted' (default), 'label' (the dataset's label) or a class index")
    p.add_argument("--batch-size", type=int, default=32, help="samples per forward/backward pass (default 32)")
    p.add_argument("--limit", type=int, help="explain only the first N samples")
    p.add_argument("--store", default="out/store",
                   help="store folder or URI (s3://, gs://; default out/store), created when missing")
    p.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1 ...")
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="forward-pass precision on GPU; relevancy always accumulates in float32")
    p.add_argument("--truncate", action="store_true",
                   help="explain the first part of texts longer than the model takes (default: refuse them)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=_explain)


def _explain(args) -> int:
    from flows.explain_cmd import run_explain

    if args.batch_size < 1 or (args.limit is not None and args.limit < 0):
        raise models.AttnAuditError("--batch-size must be ≥ 1 and --limit ≥ 0")
    s = run_explain(args.model, args.data, args.methods or ["chefer2021"], args.store, args.target, args.batch_size,
                    args.limit, args.device, args.precision, args.truncate, progress=not args.quiet)
    table = Table(title=f"attn-audit explain — run {s.run_id}", show_header=False)
    table.add_row("samples", f"{s.samples:,}")
    rate = s.explained / max(s.seconds, 1e-9)
    table.add_row("explained", f"{s.explained:,} ({rate:,.1f} samples/s, {s.seconds:.1f} s)")
    if s.labelled:
        table.add_row("accuracy", f"{s.correct / s.labelled:.1%} of {s.labelled:,} labelled samples")
    table.add_row("failed", f"{s.failed:,}" + (" — see the errors table" if s.failed else ""))
    for name, path in s.paths.items():
        table.add_row(name, str(path))
    console.print(table)
    for sample_id, stage, message in s.first_errors:
        err_console.print(f"[yellow]sample {sample_id} ({stage}):[/] {message}")
    return 0


def _methods(_args) -> int:
    table = Table(title="relevancy methods")
    for col in ("name", "gradients", "what it computes"):
        table.add_column(col)
    for name, grads, description in models.method_info():
        table.add_row(name, "yes" if grads else "no", description)
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-audit", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="attn-audit 0.1.0")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_explain(sub)
    store_commands.register(sub)
    sub.add_parser("methods", help="list the relevancy methods").set_defaults(handler=_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # our own bar counts samples, not weight shards
    try:
        return args.handler(args)
    except (models.AttnAuditError, DatasetError, FileNotFoundError, NotADirectoryError) as err:
        err_console.print(f"[red]error:[/] {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
