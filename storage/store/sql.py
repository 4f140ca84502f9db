"""SQL over the store with DuckDB: read-only views, offline (no extension is installed or loaded).

Views: runs, shards, predictions, explanations, errors, metrics, perturbation_curves, comparisons. predictions,
explanations and errors only show rows of committed shards: files whose statistics show only committed
shards are read as they are, other files through a semi-join on `shards`.

DuckDB reads every table through Arrow datasets of its current Delta snapshot (`DeltaTable.to_pyarrow_dataset`,
local and remote stores alike), never through its own file system: the connection is locked down before any
user SQL runs with no file access at all (not even to the store's files: DuckDB's allowed paths would allow
writing them too), no extensions, and the configuration cannot be changed back. On top of that only SELECT-like
statements are accepted, and EXPLAIN only of a SELECT without ANALYZE (which would run the statement).

`run_query` also bounds a query: a memory limit, an optional time limit, and SIGINT / SIGTERM stop it at once
(`con.interrupt()` from a thread woken by the signal's wakeup fd: DuckDB runs a Python signal handler only now
and then).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import unquote

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
from attn_audit.storage.store.errors import QueryError
from attn_audit.storage.store.layout import TABLES, VIEW_NAMES

READ_ONLY_TYPES = {"SELECT", "EXPLAIN"}  # DESCRIBE, SHOW, SUMMARIZE, VALUES, FROM-first parse as SELECT
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_THREAD_NAME = "attn-audit-query-stop"  # the thread that interrupts a running query


def default_memory_limit() -> str:
    """Half the memory this process may use: the machine's, or its cgroup's where that is smaller."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows)
        return "4GiB"
    with suppress(OSError, ValueError):  # no cgroup v2, or "max"
        total = min(total, int(Path("/sys/fs/cgroup/memory.max").read_text()))
    return f"{total // 2 // 2**20}MiB"


def connect(store, *, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """A locked-down in-memory DuckDB connection with the store's views; `memory_limit` as DuckDB takes it
    ("4GB", "500MiB"; default: half the memory)."""
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
    try:
        shards = store.delta("shards")  # markers first, then the data they gate: a marker implies its rows
        committed = _committed_shards(shards)
        for name in TABLES:
            _create_view(con, name, shards if name == "shards" else store.delta(name), committed)
        con.execute("CREATE VIEW shards AS SELECT * FROM _shards")
        _lock_down(con, memory_limit or default_memory_limit())
    except BaseException:
        con.close()
        raise
    return con


def run_query(store, query: str, *, timeout: float | None = None, memory_limit: str | None = None) -> pa.Table:
    """Run one read-only statement and return its result as Arrow; QueryError for anything else, and for a
    query that runs past `timeout` seconds. SIGINT / SIGTERM (main thread) stop the query, then take their
    usual course (KeyboardInterrupt for Ctrl-C)."""
    if not isinstance(query, str) or not query.strip():
        raise QueryError("empty SQL query")
    if timeout is not None and timeout <= 0:
        raise QueryError(f"the time limit must be positive (got {timeout})")
    with _stoppable(timeout) as stop:
        con = connect(store, memory_limit=memory_limit)
        try:
            _check_read_only(con, query)
            return stop.run(con, lambda: con.sql(query).to_arrow_table())
        except duckdb.InterruptException:
            if stop.timed_out:
                raise QueryError(f"the query ran past its time limit of {timeout:g} s; narrow it (WHERE, LIMIT) "
                                 "or allow more time") from None
            raise QueryError("the query was interrupted") from None
        except duckdb.OutOfMemoryException as err:
            raise QueryError(f"the query needs more memory than its limit: {_first_lines(err, 1)}; narrow it "
                             "or allow more memory") from None
        except duckdb.Error as err:
            raise QueryError(f"{_first_lines(err)}\n(views: {', '.join(VIEW_NAMES)})") from None
        finally:
            con.close()


def _committed_shards(shards) -> dict[str, set[int]]:
    committed: dict[str, set[int]] = {}
    for row in shards.to_pyarrow_dataset().to_table(columns=["run_id", "shard_id"]).to_pylist():
        committed.setdefault(row["run_id"], set()).add(row["shard_id"])
    return committed


def _create_view(con, name: str, table, committed: dict[str, set[int]]) -> None:
    """The view over one table: its files as Arrow datasets, the gated part semi-joined with the markers."""
    spec = TABLES[name]
    columns = ", ".join(f'"{c}"' for c in spec.schema.names)
    # the store's schema: files written before a column was added read it as NULL
    dataset = table.to_pyarrow_dataset(schema=spec.schema)
    clean, mixed = _split_files(dataset, table, committed) if spec.gated else (dataset, None)
    con.register(f"_arrow_{name}", clean)
    parts = [f"SELECT {columns} FROM _arrow_{name}"]
    if mixed is not None:  # files holding rows of uncommitted shards (crashed writers, compacted together)
        con.register(f"_arrow_{name}_mixed", mixed)
        parts.append(f"SELECT x.* FROM (SELECT {columns} FROM _arrow_{name}_mixed) x "
                     "SEMI JOIN _shards s ON x.run_id = s.run_id AND x.shard_id = s.shard_id")
    con.execute(f"CREATE VIEW {'_shards' if name == 'shards' else name} AS " + " UNION ALL ".join(parts))


def _split_files(dataset: pads.FileSystemDataset, table, committed: dict[str, set[int]]):
    """A gated table's files as (every row committed, some rows maybe not; None when there are none), from the
    file statistics (each shard commit writes files of one shard; compaction may merge shards). Files of
    uncommitted shards only are left out altogether."""
    actions = {unquote(a["path"]): a for a in pa.table(table.get_add_actions(flatten=True)).to_pylist()}
    clean, mixed = [], []
    for fragment in dataset.get_fragments():
        action = actions.get(fragment.path, {})
        lo, hi = action.get("min.shard_id"), action.get("max.shard_id")
        done = committed.get(action.get("partition.run_id"), set())
        if lo is None or hi is None:  # no statistics (or an unexpected path form): gate every row
            mixed.append(fragment)
        elif all(s in done for s in range(lo, hi + 1)):
            clean.append(fragment)
        elif any(s in done for s in range(lo, hi + 1)):
            mixed.append(fragment)

    def subset(fragments):
        return pads.FileSystemDataset(fragments, dataset.schema, dataset.format, dataset.filesystem)
    return subset(clean), subset(mixed) if mixed else None


def _lock_down(con, memory_limit: str) -> None:
    """Limits, then no file access at all (the views read Arrow datasets) and no way to change it back."""
    try:
        con.execute("SET memory_limit = $limit", {"limit": memory_limit})
    except duckdb.Error:
        raise QueryError(f"bad memory limit {memory_limit!r}: give a size such as 4GB or 500MiB") from None
    # spill to a folder of our own, not to ./.tmp (DuckDB's default, maybe inside the store); DuckDB removes it
    con.execute("SET temp_directory = $dir",
                {"dir": str(Path(tempfile.gettempdir()) / f"attn-audit-duckdb-{uuid.uuid4().hex}")})
    con.execute("SET enable_progress_bar = false")  # it would land in the middle of csv/json output
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _check_read_only(con, query: str) -> None:
    try:
        statements = con.extract_statements(query)
    except duckdb.Error as err:
        raise QueryError(f"SQL syntax error: {_first_lines(err)}") from None
    if len(statements) != 1:
        raise QueryError(f"give exactly one SQL statement (got {len(statements)})")
    kind = statements[0].type.name
    if kind not in READ_ONLY_TYPES:
        raise QueryError(f"the store is read-only here: {kind} statements are refused; use SELECT "
                         "(or WITH / DESCRIBE / SHOW / EXPLAIN)")
    if kind == "EXPLAIN":
        _check_explain(con, statements[0].query)


def _check_explain(con, text: str) -> None:
    """EXPLAIN [(options)] SELECT ...: no ANALYZE (it runs the statement), and only a SELECT explained."""
    tokens = _tokens(text)  # EXPLAIN first: the parser said so
    options = []
    rest = 1
    if rest < len(tokens) and tokens[rest][1] == "(":
        close = next((i for i, (_, t) in enumerate(tokens) if t == ")"), len(tokens) - 1)
        options, rest = tokens[rest + 1:close], close + 1
    elif rest < len(tokens):
        options = tokens[rest:rest + 1]
    if any(t.upper() in ("ANALYZE", "ANALYSE") for _, t in options):
        raise QueryError("the store is read-only here: EXPLAIN ANALYZE is refused (it runs the statement); "
                         "use EXPLAIN")
    inner = con.extract_statements(text[tokens[rest][0]:])[0].type.name if rest < len(tokens) else "nothing"
    if inner != "SELECT":
        raise QueryError(f"the store is read-only here: EXPLAIN of {inner} statements is refused; "
                         "explain a SELECT")


def _tokens(text: str) -> list[tuple[int, str]]:
    """(offset, text) of each token but comments."""
    found = duckdb.tokenize(text)
    ends = [offset for offset, _ in found[1:]] + [len(text)]
    return [(offset, text[offset:end].strip()) for (offset, kind), end in zip(found, ends)
            if kind != duckdb.token_type.comment]


class _Stop:
    """Interrupts a connection's running statement on a deadline or on request, over and over until it has
    returned: an interrupt that comes before DuckDB starts the statement would otherwise be lost.

    A request is a byte on a socket pair, which is also the signals' wakeup fd (signal.set_wakeup_fd): the C-level
    handler writes it the moment a signal arrives, while the main thread is still inside DuckDB and the Python
    handler has not run (DuckDB runs it only now and then, and under load not for minutes)."""

    def __init__(self, timeout: float | None):
        self._timeout = timeout
        self._wake, self._waker = socket.socketpair()
        self._waker.setblocking(False)
        self.timed_out = False

    @property
    def wakeup_fd(self) -> int:
        return self._waker.fileno()

    def request(self) -> None:
        with suppress(OSError):  # a full buffer: a request is already pending
            self._waker.send(b"\0")

    def _requested(self) -> bool:
        """Wait for a request (a 0 byte, or a stop signal's number) until the deadline; False when it passed."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self._wake], [], [], left)[0]:
                return False
            if any(byte == 0 or byte in STOP_SIGNALS for byte in self._wake.recv(64)):  # other signals: wait on
                return True

    def run(self, con, execute):
        done = threading.Event()

        def watch() -> None:
            self.timed_out = not self._requested()
            while not done.is_set():
                con.interrupt()
                done.wait(0.05)

        watcher = threading.Thread(target=watch, name=STOP_THREAD_NAME, daemon=True)
        watcher.start()
        try:
            return execute()
        finally:
            done.set()
            self.request()
            watcher.join()

    def close(self) -> None:
        self._wake.close()
        self._waker.close()


@contextmanager
def _stoppable(timeout: float | None):
    """A _Stop, with SIGINT / SIGTERM (main thread only) requesting it. On the way out the previous handlers
    come back and a signal received meanwhile goes to them, as if it had just arrived."""
    stop = _Stop(timeout)
    received: list[int] = []
    previous: dict[int, object] = {}
    wakeup = None

    def on_signal(signum, frame) -> None:
        received.append(signum)
        stop.request()

    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            handler = signal.getsignal(signum)
            if callable(handler) or handler == signal.SIG_DFL:  # not ignored, nor set outside Python
                previous[signum] = signal.signal(signum, on_signal)
        if previous:
            wakeup = signal.set_wakeup_fd(stop.wakeup_fd, warn_on_full_buffer=False)
    try:
        yield stop
    finally:
        if wakeup is not None:
            signal.set_wakeup_fd(wakeup)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop.close()
        if received:
            _redeliver(received[0], previous[received[0]])


def _redeliver(signum: int, handler) -> None:
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)  # its default action, now that the handler is back


def _first_lines(err: Exception, n: int = 3) -> str:
    return "\n".join(str(err).strip().splitlines()[:n])
