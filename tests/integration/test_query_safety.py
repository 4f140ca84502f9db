"""`attn-audit query` / `Store.sql` cannot change the store, and a query is bounded: time limit, memory limit,
SIGINT / SIGTERM stop it in one line. Everything runs against a real store."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from attn_audit.flows.cli import main
from attn_audit.storage.store import QueryError, Store
from attn_audit.storage.store.sql import STOP_THREAD_NAME

from tests.integration.small_store import build_store, file_hashes

ROOT = Path(__file__).resolve().parents[2]
RUNAWAY = "SELECT count(*) FROM range(1000000000) a, range(1000000000) b WHERE a.range + b.range = -1"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    return build_store(tmp_path_factory.mktemp("query_safety") / "store")[0]


def data_file(store: Store, method: str = "chefer2021") -> Path:
    return next(Path(store.uri, "explanations").glob(f"run_id=*/method={method}/*.parquet"))


def write_attempts(store: Store) -> list[str]:
    """Every way to write through DuckDB we could think of, aimed at the store's own files."""
    target = str(data_file(store)).replace("'", "''")
    zeroed = ("SELECT * REPLACE (list_transform(relevance, lambda x: 0.0::FLOAT) AS relevance) FROM explanations "
              "WHERE method = 'chefer2021'")
    copy_parquet = f"COPY ({zeroed}) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)"
    copy_csv = f"COPY (SELECT 'garbage' AS x) TO '{target}' (FORMAT csv, USE_TMP_FILE false)"
    return [
        copy_parquet, copy_csv, f"EXPLAIN ANALYZE {copy_parquet}", f"EXPLAIN ANALYZE {copy_csv}",
        f"explain analyse {copy_csv}", f"/* harmless */ EXPLAIN -- really\n  ANALYZE\t{copy_parquet}",
        f"EXPLAIN (ANALYZE) {copy_csv}", f"EXPLAIN (FORMAT json, ANALYZE) {copy_csv}", f"EXPLAIN {copy_csv}",
        "EXPLAIN ANALYZE CREATE TABLE t AS SELECT 1", "EXPLAIN ANALYZE INSERT INTO runs SELECT * FROM runs",
        "EXPLAIN ANALYZE SELECT 1", f"EXPORT DATABASE '{Path(store.uri, 'runs')}'",
        f"ATTACH '{Path(store.uri, 'runs', 'x.db')}' AS x", "DETACH memory", "INSTALL delta", "LOAD delta",
        "FORCE INSTALL parquet", "SET enable_external_access = true", "RESET enable_external_access",
        "SET lock_configuration = false", f"SET allowed_directories = ['{store.uri}']", "PRAGMA enable_profiling",
        "CALL pragma_version()", "CHECKPOINT", "VACUUM", "CREATE MACRO m() AS 1", "DROP VIEW runs",
        f"SELECT 1; {copy_csv}", f"{copy_csv}; SELECT 1", f"SELECT 1 /* ; */; EXPLAIN ANALYZE {copy_csv}",
        f"WITH z AS (SELECT 1) {copy_csv}", f"SELECT * FROM query('{copy_csv.replace(chr(39), chr(39) * 2)}')",
        f"SELECT * FROM read_parquet('{target}')", f"SELECT * FROM glob('{store.uri}/**')",
        f"COPY explanations FROM '{target}'", "SELECT * FROM read_csv('/etc/hostname')",
    ]


def test_no_statement_changes_a_byte_of_the_store(store):
    before = file_hashes(store.uri)
    for statement in write_attempts(store):
        with pytest.raises(QueryError):
            store.sql(statement)
        assert file_hashes(store.uri) == before, statement
    maxima = store.sql("SELECT method, max(list_max(relevance)) > 0 AS some FROM explanations GROUP BY ALL")
    assert sorted(maxima.to_pylist(), key=str) == [{"method": "chefer2021", "some": True},
                                                    {"method": "rollout", "some": True}]


def test_explain_analyze_is_refused_in_one_line_but_explain_works(store, capsys):
    code = main(["query", "--store", store.uri, f"EXPLAIN ANALYZE COPY runs TO '{data_file(store)}'"])
    err = capsys.readouterr().err
    assert code == 1 and "EXPLAIN ANALYZE is refused" in err and len(err.strip().splitlines()) == 1
    assert store.sql("EXPLAIN SELECT count(*) FROM explanations").num_rows == 1
    assert store.sql("EXPLAIN (FORMAT json) SELECT 1").num_rows == 1


def test_the_connection_itself_has_no_file_access_even_to_the_store(store):
    """Below the statement check: DuckDB reads Arrow datasets and may open no file at all."""
    before = file_hashes(store.uri)
    con = store.connect()
    try:
        for statement in (f"COPY (SELECT 1 AS x) TO '{data_file(store)}' (FORMAT csv, USE_TMP_FILE false)",
                          f"SELECT * FROM read_parquet('{data_file(store)}')"):
            with pytest.raises(duckdb.PermissionException):
                con.execute(statement)
        with pytest.raises(duckdb.Error, match="lock"):
            con.execute("SET enable_external_access = true")
        assert con.execute("SELECT count(*) FROM explanations").fetchone() == (20,)
    finally:
        con.close()
    assert file_hashes(store.uri) == before


def test_a_query_past_its_time_limit_stops_with_a_clear_error(store):
    started = time.monotonic()
    with pytest.raises(QueryError, match="ran past its time limit of 1 s"):
        store.sql(RUNAWAY, timeout=1)
    assert time.monotonic() - started < 10
    assert store.sql("SELECT count(*) AS n FROM runs", timeout=30).to_pylist() == [{"n": 1}]


def test_cli_timeout_ends_a_runaway_query_in_one_line(store, capsys):
    started = time.monotonic()
    code = main(["query", "--store", store.uri, "--timeout", "2", RUNAWAY])
    err = capsys.readouterr().err
    assert code == 1 and time.monotonic() - started < 15
    assert err.strip().splitlines() == [err.strip()] and "time limit of 2 s" in err and "Traceback" not in err


def test_memory_limit(store):
    assert store.sql("SELECT current_setting('memory_limit') AS m", memory_limit="123MiB").to_pylist() == [
        {"m": "123.0 MiB"}]
    with pytest.raises(QueryError, match="more memory than its limit"):
        store.sql("SELECT length(string_agg(range::VARCHAR, ',')) FROM range(30000000)", memory_limit="30MB")
    with pytest.raises(QueryError, match="bad memory limit 'lots'"):
        store.sql("SELECT 1", memory_limit="lots")


# The child stops itself once the query is running: the watcher thread exists from then on.
SIGNAL_ONCE_RUNNING = """
import os, signal, sys, threading, time
from attn_audit.flows.cli import main

def stop_once_running():
    while not any(t.name == {thread!r} for t in threading.enumerate()):
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(os.getpid(), signal.{signal})

signal.signal(signal.SIGINT, signal.default_int_handler)  # as a shell starts it: pytest-xdist's workers ignore
threading.Thread(target=stop_once_running, daemon=True).start()  # SIGINT, and a child inherits an ignored signal
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_sigterm_and_ctrl_c_stop_a_running_query_in_one_line(store, signal_name):
    driver = SIGNAL_ONCE_RUNNING.format(thread=STOP_THREAD_NAME, signal=signal_name)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", driver, "query", "--store", store.uri, "--timeout", "120", RUNAWAY],
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "interrupted: the query was stopped"
    assert time.monotonic() - started < 60
