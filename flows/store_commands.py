"""`attn-audit runs | query | show | store optimize|vacuum`: the commands that read and maintain the store."""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from pathlib import Path

from attn_audit.storage.store.layout import VIEW_NAMES
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console()
err_console = Console(stderr=True)

STORE_HELP = "store folder or URI (default out/store)"
FORMATS = ("table", "csv", "json", "parquet")
QUERY_TIMEOUT_S = 300
CONTROL_CHARACTERS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")  # all but newline: ESC, CR, BEL, ...
LIST_ITEMS_SHOWN = 6


def register(sub) -> None:
    """Add the store commands to the `attn-audit` sub-command parser."""
    p = sub.add_parser("runs", help="list the runs in a store with status, sample counts and methods")
    p.add_argument("--store", default="out/store", help=STORE_HELP)
    p.set_defaults(handler=_runs)

    p = sub.add_parser("query", help="run a read-only SQL query over the store (DuckDB)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run one read-only SQL statement over the store's views: "
                       f"{', '.join(VIEW_NAMES)} (docs/store.md: their columns). Statements "
                       "that write or run others (INSERT, UPDATE, DELETE, CREATE, COPY, ATTACH, EXPLAIN ANALYZE, ...) "
                       "are refused, and DuckDB has no file access. Ctrl-C, SIGTERM or --timeout stop the query.",
                       epilog="example:\n  attn-audit query \"SELECT method, count(*) FROM explanations GROUP BY "
                       "method\"\n  attn-audit query --format parquet --output maps.parquet \"SELECT * FROM "
                       "explanations WHERE run_id = '...'\"")
    p.add_argument("sql", help="one SELECT / WITH / DESCRIBE / SHOW / EXPLAIN statement")
    p.add_argument("--store", default="out/store", help=STORE_HELP)
    p.add_argument("--format", default="table", choices=FORMATS, help="output format (default table)")
    p.add_argument("--output", help="write to this file instead of standard output (required for parquet)")
    p.add_argument("--max-rows", type=int, default=100, help="rows shown by --format table (default 100)")
    p.add_argument("--timeout", type=_at_least_zero(float), default=QUERY_TIMEOUT_S, metavar="SECONDS",
                   help=f"stop the query after this long (default {QUERY_TIMEOUT_S}; 0: no limit)")
    p.add_argument("--memory-limit", metavar="SIZE",
                   help="DuckDB's memory limit, e.g. 4GB or 500MiB (default half the memory; beyond it DuckDB "
                   "spills to a temporary folder, then fails)")
    p.set_defaults(handler=_query)

    p = sub.add_parser("show", help="draw one sample's relevancy maps (PNG overlay / coloured tokens)",
                       description="Draw one sample's stored maps: images as a PNG heatmap overlaid on the input "
                       "(read again from the run's dataset), texts as coloured tokens in the terminal and an "
                       "HTML file.")
    p.add_argument("--store", default="out/store", help=STORE_HELP)
    p.add_argument("--run", required=True, help="run id (or a unique prefix of it)")
    p.add_argument("--sample", required=True, help="sample id")
    p.add_argument("--method", help="one method (default: every method of the run)")
    p.add_argument("--out", help="output file (.png for images, .html for texts; default "
                   "attn-audit-show-RUN-SAMPLE.png/.html in the current folder)")
    p.set_defaults(handler=_show)

    p = sub.add_parser("store", help="maintain a store: check (find and repair damage), optimize (compact files) or "
                       "vacuum (delete old files)")
    actions = p.add_subparsers(title="actions", metavar="ACTION", required=True)
    q = actions.add_parser("optimize", help="compact the small per-shard files and checkpoint the logs")
    q.add_argument("--store", default="out/store", help=STORE_HELP)
    q.set_defaults(handler=_optimize)
    q = actions.add_parser("vacuum", help="delete files no longer referenced (after optimize) and crash leftovers")
    q.add_argument("--store", default="out/store", help=STORE_HELP)
    q.add_argument("--retention-hours", type=_at_least_zero(int), default=168,
                   help="keep files removed less than this long ago (default 168 = 7 days: readers of "
                   "older versions keep working); 0 deletes everything unreferenced now — only while no "
                   "writer is running, or its uncommitted files go too")
    q.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    q.set_defaults(handler=_vacuum)
    q = actions.add_parser("check", help="verify the tables against the shard markers; --repair recovers what can "
                           "be recomputed", description="Verify the store: each table's log and data files, and "
                           "every committed shard's rows against its marker. Exits 1 when something is damaged.")
    q.add_argument("--store", default="out/store", help=STORE_HELP)
    q.add_argument("--run", help="check one run (id or unique prefix); damage of whole tables is always reported")
    q.add_argument("--repair", action="store_true",
                   help="make damaged tables readable again and reset the shards that lost rows (their rows and "
                   "markers are deleted): the next `attn-audit explain` of the run recomputes them")
    q.set_defaults(handler=_check)


def _clear_errors(handler):
    """Store and dataset errors become one red line and exit status 1."""
    @functools.wraps(handler)
    def wrapped(args) -> int:
        from attn_audit.storage.datasets import DatasetError
        from attn_audit.storage.store import StoreError

        try:
            return handler(args)
        except (StoreError, DatasetError) as err:
            err_console.print(_note("error:", "red", str(err)), soft_wrap=True)
            return 1
    return wrapped


def _at_least_zero(convert):
    """An argparse type: a finite number ≥ 0 (argparse turns the ArgumentTypeError into its usual one line)."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(value) and value >= 0):
            raise argparse.ArgumentTypeError(f"must be 0 or more (got {text})")
        return value
    return parse


def _clean(text: str) -> str:
    """Without control characters other than newlines: a stored string must not drive the terminal."""
    return CONTROL_CHARACTERS.sub("", text)


def _plain(value, style: str = "") -> Text:
    """A value for the terminal: never read as Rich markup, without control characters."""
    return Text(_clean(str(value)), style=style)


def _note(label: str, style: str, message: str) -> Text:
    return Text.assemble((label, style), " ", _plain(message))


def _open(args):
    from attn_audit.storage.store import Store

    return Store.open(args.store)


@_clear_errors
def _runs(args) -> int:
    store = _open(args)
    runs = store.runs().to_pylist()
    if not runs:
        console.print(_plain(f"no runs in {store.uri}"))
        return 0
    table = Table(title=_plain(f"runs in {store.uri}"))
    for col in ("run", "status", "created", "model", "data", "methods", "samples", "explained", "failed", "shards"):
        table.add_column(col, overflow="fold")
    colours = {"completed": "green", "completed_with_errors": "yellow", "failed": "red", "running": "cyan"}
    for r in runs:
        table.add_row(_plain(r["run_id"]), _plain(r["status"], style=colours.get(r["status"], "")),
                      r["created_at"].strftime("%Y-%m-%d %H:%M"), _plain(r["model_ref"]), _plain(r["dataset_ref"]),
                      _plain(", ".join(r["methods"])), f"{r['samples_done']:,}/{r['num_samples']:,}",
                      f"{r['explained']:,}", f"{r['failed']:,}", f"{r['shards_committed']}/{r['num_shards']}")
    console.print(table)
    damage = store.check()  # the counts above come from the markers: say when the tables disagree
    if not damage.clean:
        err_console.print(_note("warning:", "yellow", damage.message()), soft_wrap=True)
    return 0


@_clear_errors
def _query(args) -> int:
    from attn_audit.storage.store import StoreError

    if args.format == "parquet" and not args.output:
        raise StoreError("--format parquet needs --output FILE")
    try:
        result = _open(args).sql(args.sql, timeout=args.timeout or None, memory_limit=args.memory_limit)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (the query is stopped first: storage.store.sql)
        err_console.print(_note("interrupted:", "red", "the query was stopped"))
        return 130
    if args.format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(result, args.output, compression="zstd")
        err_console.print(_plain(f"{result.num_rows:,} rows → {args.output}"))
        return 0
    if args.format == "table":
        text = None
        _print_table(result, args.max_rows)
    elif args.format == "json":
        text = json.dumps(result.to_pylist(), default=_json_default, ensure_ascii=False)
    else:
        text = _csv(result)
    if text is not None:
        if args.output:
            Path(args.output).write_text(text + ("\n" if not text.endswith("\n") else ""))
            err_console.print(_plain(f"{result.num_rows:,} rows → {args.output}"))
        else:
            sys.stdout.write(text + ("\n" if not text.endswith("\n") else ""))
    return 0


def _print_table(result, max_rows: int) -> None:
    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(_plain(name), overflow="fold")
    for row in result.slice(0, max(max_rows, 0)).to_pylist():
        table.add_row(*(_plain(_cell(v)) for v in row.values()))
    console.print(table)
    if result.num_rows > max_rows:
        err_console.print(f"({result.num_rows:,} rows, {max_rows} shown; --max-rows N or --format csv for all)")


def _cell(value) -> str:
    """A value as the table shows it: lists as their first items and their length."""
    if value is None:
        return "∅"
    if isinstance(value, list):
        shown = ", ".join(_cell(v) for v in value[:LIST_ITEMS_SHOWN])
        if len(value) <= LIST_ITEMS_SHOWN:
            return f"[{shown}]"
        return f"[{shown}, …] ({len(value):,})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_cell(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _csv(result) -> str:
    """CSV; list columns (maps, tokens) become JSON arrays in their cell."""
    import io

    import pyarrow as pa
    import pyarrow.csv as pacsv

    columns = []
    for column in result.columns:
        t = column.type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_struct(t) or pa.types.is_map(t):
            column = pa.array([None if v is None else json.dumps(v, default=_json_default) for v in column.to_pylist()],
                              pa.string())
        columns.append(column)
    out = io.BytesIO()
    pacsv.write_csv(pa.table(columns, names=result.column_names), out)
    return out.getvalue().decode()


def _json_default(value):
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@_clear_errors
def _show(args) -> int:
    from attn_audit.storage.store import render

    store = _open(args)
    info = store.run(args.run)
    exps = store.explanation(info.run_id, args.sample, args.method)
    stem = Path(args.out) if args.out else Path(f"attn-audit-show-{info.run_id[:8]}-{_safe(args.sample)}")
    title = f"run {info.run_id} · sample {args.sample}"
    written = []

    def caption(exp) -> str:
        return f"{exp.method} · target {exp.target_label if exp.target_label is not None else exp.target}"

    image_maps = [(caption(e), e.relevance["image"]) for e in exps if "image" in e.relevance]
    if image_maps:
        image = _input_image(store, info, args.sample)
        png = stem if stem.suffix.lower() == ".png" else stem.with_suffix(".png")
        png.parent.mkdir(parents=True, exist_ok=True)
        render.save_panels(png, image, image_maps, title)
        written.append(png)
    text_sections = [(caption(e), e.tokens.get("text") or [str(i) for i in range(e.relevance["text"].size)],
                      e.relevance["text"], e.special.get("text")) for e in exps if "text" in e.relevance]
    if text_sections:
        console.print(_plain(title, style="bold"))
        for heading, tokens, relevance, special in text_sections:
            console.print(_plain(heading, style="bold"))
            console.print(_rich_tokens(tokens, relevance, special))
        page = stem if stem.suffix.lower() in (".html", ".htm") else stem.with_suffix(".html")
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(render.tokens_html(text_sections, title), encoding="utf-8")
        written.append(page)
    for path in written:
        console.print(_plain(f"wrote {path}"))
    return 0


def _input_image(store, info, sample_id: str):
    """The sample's input image, read again from the run's dataset; None (maps drawn alone) when the
    dataset cannot be opened or no longer holds the sample."""
    from attn_audit.storage.datasets import DatasetError, SampleError, open_dataset
    from attn_audit.storage.store import render

    try:
        dataset = open_dataset(info.dataset_ref)
    except DatasetError as err:
        err_console.print(_note("warning:", "yellow", f"cannot reopen the run's dataset ({err}); drawing the maps "
                                "alone"))
        return None
    shard = store.sample_shard(info.run_id, sample_id)
    ranges = ([range(*shard)] if shard else []) + [range(len(dataset))]
    for positions in ranges:
        for i in positions:
            if i < len(dataset) and dataset.sample_id(i) == sample_id:
                try:
                    return render.to_image(dataset[i]["image"])
                except (SampleError, KeyError, OSError, ValueError) as err:
                    err_console.print(_note("warning:", "yellow", f"cannot read the input image ({err}); "
                                            "drawing the maps alone"))
                    return None
    err_console.print(_note("warning:", "yellow", f"{info.dataset_ref} no longer holds sample {sample_id!r}; "
                            "drawing the maps alone"))
    return None


def _rich_tokens(tokens, relevance, special) -> Text:
    from attn_audit.storage.store import render

    weights = render.token_weights(relevance, special)
    text = Text()
    for i, token in enumerate(tokens):
        style = "dim" if special is not None and special[i] else f"black on {render.token_colour(weights[i])}"
        text.append(_clean(token), style=style)
        text.append(" ")
    return text


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:60] or "sample"


@_clear_errors
def _optimize(args) -> int:
    store = _open(args)
    report = store.optimize()
    table = Table(title=_plain(f"optimize {store.uri}"))
    for col in ("table", "files removed", "files added"):
        table.add_column(col)
    for name, metrics in report.items():
        table.add_row(name, str(metrics.get("numFilesRemoved", 0)), str(metrics.get("numFilesAdded", 0)))
    console.print(table)
    return 0


@_clear_errors
def _check(args) -> int:
    from attn_audit.storage.store import Store

    store = Store.open(args.store, strict=False)  # a damaged store opens, to be examined
    report = store.repair(args.run) if args.repair else store.check(args.run)
    for line in report.repaired:
        console.print(_note("repaired:", "green", line), soft_wrap=True)
    verdict, *details = report.lines()
    console.print(_plain(verdict, "green" if report.clean else "red"), soft_wrap=True)
    for line in details:
        console.print(_plain(line), soft_wrap=True)
    return 0 if report.clean else 1


@_clear_errors
def _vacuum(args) -> int:
    store = _open(args)
    report = store.vacuum(retention_hours=args.retention_hours, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    for name, files in report.items():
        console.print(f"{name}: {verb} {len(files)} file(s)")
    return 0
