"""The `attn-audit` command line."""

from __future__ import annotations

import argparse
import functools
import os
import signal
import sys

from attn_audit.flows import compare_commands, evaluate_commands, report_commands, store_commands
from attn_audit.flows.prefect_settings import configure_environment
from attn_audit.flows.request import ComputeSpec, MapSpec, build_request
from attn_audit.flows.request_options import add_options, given
from attn_audit.flows.terminal import literal
from attn_audit.storage.datasets import DatasetError
from rich.console import Console
from rich.table import Table

from attn_audit import models

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
  attn-audit audit --model builtin:fashion-vit --data builtin:fashion-canvas --store out/store
  attn-audit explain --model builtin:fashion-vit --data builtin:fashion-canvas --limit 100
  attn-audit explain --model ./my-bert --data jsonl:reviews.jsonl --method chefer2021 --method rollout
  attn-audit compare --store out/store --run BASELINE_RUN --run NEW_RUN
  attn-audit methods
"""


def _add_run_options(p, methods_default: str) -> None:
    """The request's fields (flows.request: written once), then how this command shows its work."""
    add_options(p, MapSpec, required=("model", "data"), methods_default=methods_default)
    add_options(p, ComputeSpec)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--verbose", action="store_true", help="show Prefect's and Ray's logs, and tracebacks")


RUN_EPILOG = """\
Runs a Prefect flow: the dataset is cut into shards; each shard is one call on a pool of Ray actors
(retried when its worker dies or its commit conflicts), which explains it and commits it to the store.
With no PREFECT_API_URL / RAY_ADDRESS, a temporary Prefect server and a local Ray start and stop with
the command; with them set, the flow uses that Prefect server and Ray cluster. Rerunning the same
command resumes: committed shards are skipped.
"""


RUN_COMMANDS = {  # name: (help, description, default methods)
    "audit": ("explain a dataset with the attention methods (or those named), then run the evaluation jobs",
              "The main job: explain a dataset into the store (as `explain` does, default: the attention "
              "methods), then run the downstream jobs over the stored run (evaluation, report) and print a "
              "summary.", None),
    "explain": ("compute relevancy maps for a dataset into the explanation store",
                "Compute relevancy maps for every sample of a dataset. Writes a run into the store at --store: "
                "explanations (long format: one row per sample × method × modality), predictions and errors, one "
                "commit per shard; rerunning resumes.", ["chefer2021"]),
}


def _add_run_commands(sub) -> None:
    for name, (help_text, description, methods) in RUN_COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=description, epilog=RUN_EPILOG,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_run_options(p, ", ".join(methods) if methods else "the attention methods (the LRP family by name)")
        p.set_defaults(handler=functools.partial(_run, kind=name),
                       default_methods=methods or models.default_methods())


def _run(args, kind: str) -> int:
    configure_environment(verbose=args.verbose)  # before Prefect is imported
    from attn_audit.flows.audit import run_audit
    from attn_audit.flows.plan import NothingToDo

    request = build_request(**{"methods": args.default_methods, **given(args, MapSpec)}, **given(args, ComputeSpec))
    try:
        summary = run_audit(request, kind=kind, progress=not args.quiet, verbose=args.verbose)
    except NothingToDo as err:
        console.print(literal(err))
        return 0
    except (models.AttnAuditError, DatasetError, FileNotFoundError, NotADirectoryError, KeyboardInterrupt):
        raise
    except Exception as err:  # Prefect / Ray / store failures: one line unless --verbose
        if args.verbose:
            raise
        raise models.AttnAuditError(f"{type(err).__name__}: {_first_line(err)} (--verbose shows more)") from None
    if kind == "audit":
        _print_results(request.compute.store, summary.run_id)
    _print_summary(summary)
    return 0


def _print_results(store: str, run_id: str) -> None:
    """The evaluation's ranked results table, as the downstream jobs stored it."""
    from attn_audit.storage.store import Store
    from attn_audit.tasks.evaluate.aggregate import stored_summary

    store = Store.open(store)
    rows = stored_summary(store, run_id)
    for table in evaluate_commands.headline_tables(rows, list(store.run(run_id).methods),
                                                   f"results — run {literal(run_id)}"):
        console.print(table)


def _print_summary(s) -> None:
    """The end-of-run table and the first sample errors. Every value that comes from the user, the data or the
    store is printed literally (flows.terminal): a sample id or path may hold brackets or control characters."""
    table = Table(title=f"attn-audit {s.kind} — run {literal(s.run_id)}" +
                  (f" (generation {s.generation})" if s.generation else ""), show_header=False)
    style = {"completed": "green", "completed_with_errors": "yellow"}.get(s.status, "red")
    table.add_row("status", f"[{style}]{literal(s.status)}[/]")
    table.add_row("samples", f"{s.samples:,}")
    compute = s.timings.get("shards")
    rate = f" ({s.samples_computed / compute:,.1f} samples/s)" if compute and s.samples_computed else ""
    samples = s.samples - s.failed
    counted = f"{s.explained:,} samples" if s.explained == samples else \
        f"{s.explained:,} targets from {samples:,} samples"  # many-target models: tokens, detections
    table.add_row("explained", counted + rate)
    if s.labelled:
        table.add_row("accuracy", f"{s.correct / s.labelled:.1%} of {s.labelled:,} labelled samples")
    table.add_row("failed", f"{s.failed:,}" + (" — see the errors table (below)" if s.failed else ""))
    table.add_row("shards", f"{s.shards} ({s.shards_skipped} already committed, {s.shards_run} computed now)")
    if s.placement:
        table.add_row("workers", literal(s.placement))
    startup = ", ".join(f"{label} {s.timings[key]:.1f} s" for key, label in
                        (("prefect_start", "Prefect"), ("ray_start", "Ray"), ("workers_ready", "workers"))
                        if key in s.timings)
    table.add_row("time", f"{s.seconds:.1f} s" + (f" (start-up: {startup})" if startup else ""))
    for name, path in s.paths.items():
        table.add_row(literal(name), literal(path))
    table.add_row("prefect", f"flow run {literal(s.flow_run_name)} on {literal(s.prefect_api)}")
    console.print(table)
    for sample_id, stage, message in s.first_errors:
        err_console.print(f"[yellow]sample {literal(sample_id)} ({literal(stage)}):[/] {literal(message)}")
    if s.failed:
        err_console.print(f"{s.failed:,} samples failed; all of them: {literal(s.errors_query)}", soft_wrap=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _methods(_args) -> int:
    table = Table(title="relevancy methods (parameters: --method NAME:KEY=VALUE[,KEY=VALUE])")
    for col in ("name", "gradients", "families", "what it computes", "parameters"):
        table.add_column(col)
    for name, grads, description, params in models.method_info():
        given = "\n".join(f"{k}: {' | '.join(map(str, p.choices)) if p.choices else p.kind.__name__}, default "
                          f"{p.default!r} — {p.help}" for k, p in params.items())
        families = models.methods.get_method(name).families
        table.add_row(name, "yes" if grads else "no", ", ".join(sorted(families)) if families else "all", description,
                      given or "—")
    console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-audit", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version="attn-audit 0.1.0")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_run_commands(sub)
    store_commands.register(sub)
    evaluate_commands.register(sub)
    report_commands.register(sub)
    compare_commands.register(sub)
    sub.add_parser("methods", help="list the relevancy methods").set_defaults(handler=_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # our own bar counts samples, not weight shards
    previous = _on_sigterm(_terminate)  # finally-blocks run, so a local Ray and Prefect's server stop
    try:
        return args.handler(args)
    except (models.AttnAuditError, DatasetError, FileNotFoundError, NotADirectoryError) as err:
        err_console.print(f"[red]error:[/] {literal(err)}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        err_console.print("[red]interrupted[/]: committed shards are kept; run the same command again to resume")
        return 130
    finally:
        _on_sigterm(previous)


def _on_sigterm(handler):
    """Install a SIGTERM handler (main thread only); returns the previous one."""
    import threading

    if handler is None or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, handler)


def _terminate(signum, frame):
    raise KeyboardInterrupt


# Commands that only read: their process ends at once when done, skipping the interpreter's teardown, where
# pyarrow's dataset threads over deltalake's file system abort it now and then (std::terminate, "terminate called
# without an active exception": 1 in 13-40 `attn-audit runs` here; delta-rs #2184, arrow #34314). Their output is
# flushed first, and they hold no server, worker or file to release.
ENDS_AT_ONCE = frozenset({"runs", "query", "show", "methods"})


def run_console_script(argv: list[str] | None = None) -> None:
    """The `attn-audit` console script: `main`, then the exit."""
    argv = sys.argv[1:] if argv is None else argv
    code = main(argv)
    if next((a for a in argv if not a.startswith("-")), None) in ENDS_AT_ONCE:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run_console_script()
