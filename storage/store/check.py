"""`Store.check` / `Store.repair` (`attn-audit store check [--repair]`): what a store holds, against its markers.

A store can be damaged from outside (a disk error, an interrupted copy, a file deleted by hand), and Delta Lake
reads some damage as valid: an empty commit file is an empty commit, so the rows it added vanish without an
error. The check finds, per table:
- a missing table (no `_delta_log`), and in local stores commit files that are empty, unreadable or missing
  (only those after the last checkpoint: Delta reads no earlier one);
- data files the log references that are missing or have another size than the log says (local stores);
- for every committed shard (a marker in `shards`), the rows of `explanations`, `predictions` and `errors`
  against the marker's counts (maps, explained, failed), from the log's per-file statistics (a file's
  `shard_id` column is read only when the file spans several shards, after `optimize`);
- runs marked complete that lack committed shards.

Repair recomputes rather than guesses. It makes each table readable again without changing what Delta reads
from it (an empty commit file, or an unreadable newest one, is replaced by an empty commit; a lost table other
than `runs` is created again, empty; references to missing data files are dropped), then *resets* every shard
whose rows no longer match its marker: deletes its rows, data tables first and marker last, recording its
transaction at version 0, which `Store.commit_shard` reads as "not committed". The next `attn-audit explain`
of the run resumes and computes exactly those shards again. What cannot be recovered that way (an unreadable
commit in the middle of a log, the `runs` table, evaluation results) is reported with what to do instead.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
from attn_audit.storage.store.committer import backoff, shard_key, sql_safe, transaction, writer_properties
from attn_audit.storage.store.errors import StoreConflictError, StoreDamagedError, first_line
from attn_audit.storage.store.layout import ADDED_TABLES, APPEND_TABLES, SHARD_TABLES, TABLES
from attn_audit.storage.store.migration import create_table, data_files
from attn_audit.storage.store.store import Store, read_files
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(\.\d+\.\d+)?\.parquet$")
MARKER_COUNTS = {"explanations": "maps", "predictions": "explained", "errors": "failed"}  # see commit_shard
COMPLETE = ("completed", "completed_with_errors")
# the order the tables are loaded in: each snapshot is at least as new as the ones it is checked against (a run
# marked complete had its markers first, a marker its rows), so a writer committing meanwhile is not damage
_LOADED_FIRST = ("runs", "shards", *SHARD_TABLES)
CHECK_ORDER = (*_LOADED_FIRST, *(name for name in TABLES if name not in _LOADED_FIRST))
REWRITTEN_COMMITS = ("empty_commit", "unreadable_commit")
TABLE_REPAIRS = (*REWRITTEN_COMMITS, "missing_table", "missing_file")  # done before the shards are counted
RESET_ATTEMPTS = 20


@dataclass(frozen=True)
class Damage:
    """One problem: where, what, and what `--repair` does about it (None: it cannot; `advice` says what to do)."""

    table: str
    kind: str  # missing_table, unreadable_log, empty_commit, unreadable_commit, missing_commit, missing_file,
    #            changed_file, row_count, lost_marker, status
    problem: str
    repair: str | None
    advice: str = ""
    run_id: str | None = None
    shard_id: int | None = None
    path: str | None = None  # the commit or data file concerned


@dataclass
class CheckReport:
    """What `check()` found (and, after `repair()`, what was done: `repaired`)."""

    uri: str
    run_id: str | None = None
    damage: list[Damage] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)  # tables that cannot be loaded, or hold a changed file
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.damage

    @property
    def command(self) -> str:
        return f"attn-audit store check --store {self.uri}"

    def shards_to_recompute(self) -> dict[str, list[int]]:
        """run_id -> the shards whose stored rows do not match their markers, or whose marker is lost."""
        found: dict[str, set[int]] = {}
        for d in self.damage:
            if d.kind in ("row_count", "lost_marker"):
                found.setdefault(d.run_id, set()).add(d.shard_id)
        return {run: sorted(ids) for run, ids in sorted(found.items())}

    def next_step(self) -> str:
        blocked = [d for d in self.damage if d.repair is None]
        if not blocked:
            return (f"run `{self.command} --repair`, then the same `attn-audit explain` again: it recomputes what "
                    "was lost")
        more = f"; `{self.command}` lists all {len(self.damage)} problems" if len(self.damage) > 1 else ""
        return f"{blocked[0].advice}{more}"

    def message(self) -> str:
        """One line: the first problem, how many more, and what to do."""
        first = self.damage[0]
        more = f" (and {len(self.damage) - 1} more problem(s))" if len(self.damage) > 1 else ""
        return f"the store {self.uri} is damaged: {first.table}: {first.problem}{more}; {self.next_step()}"

    def raise_if_damaged(self) -> None:
        if self.damage:
            raise StoreDamagedError(self.message())

    def lines(self) -> list[str]:
        """The readable report: a verdict, then each damaged table with its problems and what repair does."""
        scope = f"run {self.run_id} of " if self.run_id else ""
        if self.clean:
            return [f"{scope}{self.uri}: no damage found"]
        fixable = sum(d.repair is not None for d in self.damage)
        out = [f"{scope}{self.uri}: damaged, {len(self.damage)} problem(s), {fixable} of them recoverable with "
               "--repair"]
        for table in dict.fromkeys(d.table for d in self.damage):
            out.append(table)
            for d in (d for d in self.damage if d.table == table):
                out.append(f"  - {d.problem}")
                out.append(f"      --repair {d.repair}" if d.repair else f"      cannot be repaired: {d.advice}")
        return out


def check(store: Store, run_id: str | None = None) -> CheckReport:
    """Every table's log and files, then the shards of `run_id` (None: of every run) against their markers.
    Table-wide damage (logs, missing tables) is reported whatever the run."""
    report = CheckReport(store.uri, run_id)
    tables: dict[str, DeltaTable] = {}
    for name in CHECK_ORDER:
        table, damage = _inspect(store, name, run_id)
        report.damage += damage
        if table is not None:
            tables[name] = table
        if (table is None and damage) or any(d.kind == "changed_file" for d in damage):
            report.unreadable.add(name)
    if "shards" in tables and "runs" in tables:
        report.damage += _shard_damage(store, tables, report, run_id)
    return report


def check_table(store: Store, name: str) -> CheckReport:
    """The log and data files of one table (what makes reading it fail)."""
    return CheckReport(store.uri, damage=_inspect(store, name, None)[1])


def check_files(store: Store) -> CheckReport:
    """Only the data files the logs reference, missing or changed (local stores): what stops a query."""
    report = CheckReport(store.uri)
    for name in TABLES:
        try:
            table = DeltaTable(store.table_uri(name), storage_options=store.storage_options)
        except DeltaError:  # reported by whoever loads it next, with its own message
            continue
        report.damage += _file_damage(store, name, table, None)
    return report


def repair(store: Store, run_id: str | None = None) -> CheckReport:
    """Repair what can be recomputed (see the module docstring); returns the check after it, with `repaired`."""
    done: list[str] = []
    to_reset: dict[str, set[int]] = {}

    def collect(report: CheckReport) -> CheckReport:  # a lost marker shows only until its file is dropped
        for run, ids in report.shards_to_recompute().items():
            to_reset.setdefault(run, set()).update(ids)
        return report

    report = collect(check(store, run_id))
    for _ in range(2):  # a log made readable again can show missing files: the second pass drops them
        todo = [d for d in report.damage if d.repair and d.kind in TABLE_REPAIRS]
        if not todo:
            break
        done += _repair_tables(store, todo)
        report = collect(check(store, run_id))
    if report.unreadable & {"shards", *SHARD_TABLES}:  # the shard counts are incomplete: reset nothing yet
        to_reset.clear()
    for run, ids in sorted(to_reset.items()):
        shard_ids = sorted(ids)
        _reset_shards(store, run, shard_ids)
        done.append(f"run {run}: reset {len(shard_ids)} shard(s) ({_ranges(shard_ids)}); the next `attn-audit "
                    "explain` (or `audit`) that wrote the run recomputes them")
    for run in sorted(set(to_reset) | {d.run_id for d in report.damage if d.kind == "status"}):
        if store.run(run).status != "running":
            store.set_status(run, "running")
            done.append(f"run {run}: status set back to running")
    final = check(store, run_id)
    final.repaired = done
    return final


# ---------------------------------------------------------------------------------------------- one table
def _inspect(store: Store, name: str, run_id: str | None) -> tuple[DeltaTable | None, list[Damage]]:
    """The table loaded (None when it cannot be) and the damage of its log and files."""
    damage = _log_damage(store, name)
    try:
        table = DeltaTable(store.table_uri(name), storage_options=store.storage_options)
    except DeltaError as err:
        if not damage and not _absent_added_table(store, name):  # a remote store, or damage the log check misses
            damage.append(_unloadable(store, name, err))
        return None, damage
    return table, damage + _file_damage(store, name, table, run_id)


def _local_folder(store: Store, name: str) -> Path | None:
    return None if "://" in store.uri else Path(store.table_uri(name))  # Store.open resolves local paths


def _absent_added_table(store: Store, name: str) -> bool:
    """A table newer than the store, never created: not damage (opening the store creates it)."""
    return name in ADDED_TABLES and not data_files(store, name)


def _missing_table(store: Store, name: str) -> Damage:
    held = len(data_files(store, name))
    problem = "the table is missing (no _delta_log" + (f"; its folder holds {held} data file(s))" if held else ")")
    if name == "runs":
        return Damage(name, "missing_table", problem, None,
                      f"restore {name}/_delta_log from a backup (the runs' provenance cannot be recomputed)")
    again = {"shards": "the next `attn-audit explain` of each run computes its shards again to write their markers",
             **dict.fromkeys(APPEND_TABLES, "the evaluation results in it are recomputed by the next `attn-audit "
                             "audit` of each run")}.get(name, "recomputes the shards that had rows in it")
    return Damage(name, "missing_table", problem,
                  f"creates it again, empty, and {again} (restore {name}/_delta_log from a backup instead to keep "
                  "its rows)")


def _unloadable(store: Store, name: str, err: DeltaError) -> Damage:
    if isinstance(err, TableNotFoundError):
        return _missing_table(store, name)
    reachable = "" if _local_folder(store, name) else "if the object store is reachable, "
    return Damage(name, "unreadable_log", f"its log cannot be read ({first_line(err)})", None,
                  f"{reachable}restore {store.table_uri(name)}/_delta_log from a backup")


def _log_damage(store: Store, name: str) -> list[Damage]:
    """Empty, unreadable and missing commit files after the last checkpoint; a missing log (local stores)."""
    folder = _local_folder(store, name)
    if folder is None:
        return []
    log = folder / "_delta_log"
    entries = list(log.iterdir()) if log.is_dir() else []
    commits = {int(m[1]): p for p in entries if (m := COMMIT_FILE.match(p.name))}
    checkpoint = max((int(m[1]) for p in entries if (m := CHECKPOINT_FILE.match(p.name))), default=-1)
    if not commits and checkpoint < 0:
        return [] if _absent_added_table(store, name) else [_missing_table(store, name)]
    newest = max([checkpoint, *commits])
    restore = (f"restore it from a backup, then run `attn-audit store check --store {store.uri}` again; without "
               "one, re-run the audits into a new store")
    damage = []
    for version in range(checkpoint + 1, newest + 1):
        path = commits.get(version)
        if path is None:
            damage.append(Damage(name, "missing_commit", f"commit {version} is missing from {name}/_delta_log", None,
                                 restore))
            continue
        problem = _commit_problem(path)
        if problem is None:
            continue
        kind = "empty_commit" if problem.startswith("is empty") else "unreadable_commit"
        # Delta reads an empty commit file as an empty commit; an unreadable newest one can be rolled back. An
        # unreadable one with later commits on top cannot: they were made on what it did.
        fixable = version > 0 and (kind == "empty_commit" or version == newest)
        fix = ("replaces it with an empty commit (what it wrote is lost) and recomputes the shards that lost rows"
               if fixable else None)
        damage.append(Damage(name, kind, f"commit {version} ({name}/_delta_log/{path.name}) {problem}", fix,
                             "" if fixable else restore, path=str(path)))
    return damage


def _commit_problem(path: Path) -> str | None:
    data = path.read_bytes()
    if not data.strip():
        return f"is empty ({len(data)} bytes)"
    try:
        for number, line in enumerate(data.decode().splitlines(), 1):
            if line.strip() and not isinstance(json.loads(line), dict):
                return f"is not a Delta commit (line {number} is not a JSON object)"
    except UnicodeDecodeError:
        return "is not text (not a Delta commit)"
    except ValueError:
        return f"is truncated or not valid JSON (line {number})"
    return None


def _file_damage(store: Store, name: str, table: DeltaTable, run_id: str | None) -> list[Damage]:
    """Data files referenced by the log that are missing or have another size (local stores)."""
    folder = _local_folder(store, name)
    if folder is None:
        return []
    gated = name in (*SHARD_TABLES, "shards")
    damage = []
    for action in _actions(table):
        if run_id is not None and action.get("partition.run_id") != run_id:
            continue
        relative = f"{name}/{unquote(action['path'])}"  # as found in the store's folder
        path = folder.parent / relative
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            damage.append(Damage(
                name, "missing_file", f"data file {relative} is missing",
                "drops it from the table and recomputes the shards that lost rows" if gated else None,
                f"restore it from a backup; without one, {_lost_rows(name)}", path=str(path)))
            continue
        if size != action["size_bytes"]:
            recompute = (f", or delete it and run `attn-audit store check --store {store.uri} --repair` to recompute "
                         "its shards" if gated else "")
            problem = f"data file {relative} has {size:,} bytes, the log says {action['size_bytes']:,}"
            damage.append(Damage(name, "changed_file", problem, None, f"restore it from a backup{recompute}",
                                 path=str(path)))
    return damage


def _lost_rows(name: str) -> str:
    if name == "runs":
        return "re-run the audits into a new store (the runs' provenance cannot be recomputed)"
    return "re-run the audit with --force (a new generation computes everything again) and use that run"


def _actions(table: DeltaTable) -> list[dict]:
    return pa.table(table.get_add_actions(flatten=True)).to_pylist()


# ---------------------------------------------------------------------------------------------- shards
def _shard_damage(store: Store, tables: dict[str, DeltaTable], report: CheckReport,
                  run_id: str | None) -> list[Damage]:
    """Each marker's counts against the rows its shard has in each data table; runs against their markers."""
    missing: dict[str, set[str]] = {}  # table -> its missing or changed files (not read), relative to the table
    for d in report.damage:
        if d.kind in ("missing_file", "changed_file"):
            missing.setdefault(d.table, set()).add(Path(d.path).relative_to(_local_folder(store, d.table)).as_posix())
    markers = _present_rows(tables["shards"], missing.get("shards", set()),
                            ["run_id", "shard_id", *MARKER_COUNTS.values()], run_id)
    runs = _present_rows(tables["runs"], missing.get("runs", set()), ["run_id", "status", "num_samples", "shard_size"],
                         run_id)
    runs = {r["run_id"]: r for r in runs if run_id is None or r["run_id"] == run_id}
    markers = [m for m in markers if m["run_id"] in runs]  # not: another run, or one begun after `runs` was read
    damage = _lost_markers(tables["shards"], missing.get("shards", set()), markers, runs)
    for name, count in MARKER_COUNTS.items():
        if name not in tables:
            continue
        held = _rows_per_shard(tables[name], missing.get(name, set()), run_id)
        for m in markers:
            got, want = held.get((m["run_id"], m["shard_id"]), 0), m[count]
            if got != want:
                damage.append(Damage(name, "row_count",
                                     f"run {m['run_id']} shard {m['shard_id']}: {got} rows, its marker says {want}",
                                     "deletes the shard's rows and marker: the next `attn-audit explain` of the run "
                                     "computes it again", run_id=m["run_id"], shard_id=m["shard_id"]))
    committed = Counter(m["run_id"] for m in markers)
    for r in runs.values():
        shards = _num_shards(r)
        if r["status"] in COMPLETE and committed[r["run_id"]] < shards:
            damage.append(Damage("runs", "status", f"run {r['run_id']} is marked {r['status']} but only "
                                 f"{committed[r['run_id']]} of its {shards} shards are committed",
                                 "sets it back to running: the next `attn-audit explain` of the run computes the "
                                 "missing shards", run_id=r["run_id"]))
    return damage


def _lost_markers(shards: DeltaTable, missing: set[str], markers: list[dict], runs: dict[str, dict]) -> list[Damage]:
    """The shards whose marker was in a missing file (from the file's statistics), and that have no other."""
    present = {(m["run_id"], m["shard_id"]) for m in markers}
    lost = set()
    for action in _actions(shards):
        run, lo, hi = action.get("partition.run_id"), action.get("min.shard_id"), action.get("max.shard_id")
        if unquote(action["path"]) in missing and run in runs:
            span = range(lo, hi + 1) if lo is not None and hi is not None else range(_num_shards(runs[run]))
            lost.update((run, s) for s in span if (run, s) not in present)
    return [Damage("shards", "lost_marker", f"run {run} shard {shard}: its marker was in the missing file",
                   "recomputes the shard (its rows are deleted; the next `attn-audit explain` of the run computes it "
                   "again)", run_id=run, shard_id=shard) for run, shard in sorted(lost)]


def _num_shards(run: dict) -> int:
    return ceil(run["num_samples"] / run["shard_size"]) if run["shard_size"] else 0


def _rows_per_shard(table: DeltaTable, missing: set[str], run_id: str | None) -> Counter:
    """(run_id, shard_id) -> rows held, from the files' statistics; files that span several shards (or have no
    statistics) are counted from their shard_id column."""
    held: Counter = Counter()
    unsure, unsure_runs = set(), set()
    for action in _actions(table):
        run, path = action.get("partition.run_id"), unquote(action["path"])
        if (run_id is not None and run != run_id) or path in missing:
            continue
        lo, hi, n = action.get("min.shard_id"), action.get("max.shard_id"), action.get("num_records")
        if lo is not None and lo == hi and n is not None:
            held[(run, lo)] += n
        else:
            unsure.add(path)
            unsure_runs.add(run)
    if unsure:
        rows = read_files(table, unsure_runs, unsure.__contains__, columns=["run_id", "shard_id"])
        held.update(zip(rows["run_id"].to_pylist(), rows["shard_id"].to_pylist()))
    return held


def _present_rows(table: DeltaTable, missing: set[str], columns: list[str], run_id: str | None) -> list[dict]:
    """The rows of the table's files that exist (a missing file is reported, not a reason to stop), of one run's
    partition or of all."""
    runs = None if run_id is None else [run_id]
    return read_files(table, runs, lambda path: path not in missing, columns=columns).to_pylist()


# ---------------------------------------------------------------------------------------------- repairs
def _repair_tables(store: Store, damage: list[Damage]) -> list[str]:
    """Make each table readable again: rewrite bad commit files, create lost tables, drop missing files."""
    done = []
    for d in damage:
        if d.kind in REWRITTEN_COMMITS:
            _write_empty_commit(Path(d.path))
            done.append(f"{d.table}: {d.path} is an empty commit now")
        elif d.kind == "missing_table":
            create_table(store, d.table)
            done.append(f"{d.table}: created again, empty")
    for name in dict.fromkeys(d.table for d in damage if d.kind == "missing_file"):
        removed = store.delta(name).repair()["files_removed"]
        done.append(f"{name}: dropped {len(removed)} missing data file(s) from the log")
    return done


def _write_empty_commit(path: Path) -> None:
    """A commit with no actions but its commitInfo: what Delta reads an empty commit file as, made valid."""
    info = {"commitInfo": {"timestamp": int(time.time() * 1000), "operation": "attn-audit store check --repair",
                           "operationParameters": {"replaced": "an empty or unreadable commit file"}}}
    scratch = path.with_name(f".{path.name}.attn-audit-repair")
    scratch.write_text(json.dumps(info) + "\n")
    scratch.replace(path)


def _reset_shards(store: Store, run_id: str, shard_ids: list[int]) -> None:
    """Delete the shards' rows and markers, recording their transactions at version 0 (not committed) in the
    same commits. Markers last: until they go, the shards stay visible as damaged, never look complete."""
    keys = [shard_key(run_id, s) for s in shard_ids]
    reset = CommitProperties(app_transactions=[transaction(k, 0) for k in keys],
                             custom_metadata={"attn_audit_repair": f"reset shards {_ranges(shard_ids)}"})
    predicate = f"run_id = '{sql_safe(run_id)}' AND shard_id IN ({', '.join(map(str, shard_ids))})"
    float16 = store.run(run_id).relevance_dtype == "float16"
    for name in (*SHARD_TABLES, "shards"):
        for attempt in range(RESET_ATTEMPTS):
            try:
                _forget(store, name, predicate, keys, reset, "float16" if float16 else "float32")
                break
            except CommitFailedError:
                backoff(attempt)
        else:
            raise StoreConflictError(f"could not reset shards of run {run_id} in {name}: too many concurrent "
                                     "writers; stop them and run the repair again")


def _forget(store: Store, name: str, predicate: str, keys: list[str], reset: CommitProperties,
            relevance_dtype: str) -> None:
    table = store.delta(name)
    deleted = table.delete(predicate, writer_properties=writer_properties(name, relevance_dtype),
                           commit_properties=reset)
    if not deleted["num_deleted_rows"] and store.committed_keys(name, keys):
        # nothing to delete makes no commit: record the reset on its own
        write_deltalake(table, TABLES[name].schema.empty_table(), mode="append", commit_properties=reset)


def _ranges(ids: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    parts, start = [], None
    for i, value in enumerate(ids):
        if start is None:
            start = value
        if i + 1 == len(ids) or ids[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ", ".join(parts)
