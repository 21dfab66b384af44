"""The reads both paths share: ad-hoc SQL is read-only by every lock, bounded in rows and time."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from service.config import ConfigError
from service.sinks.base import Warehouse
from service.sinks.duckdb import DuckDBSink, DuckSession
from service.verify import check
from service.watch import reads, snapshot

from .conftest import START, cli


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("reads") / "reads.duckdb"
    done = cli(
        "run", "--events", "5000", "--seed", "7", "--start", START, "--duckdb-path", str(path)
    )
    assert done.returncode == 0, done.stderr
    return path


@pytest.fixture
def session(written: Path, tmp_path: Path) -> Iterator[DuckSession]:
    path = tmp_path / "copy.duckdb"
    shutil.copy(written, path)
    sink = DuckDBSink(path)
    sink.open()
    s = sink.connect_sql()
    try:
        yield s
    finally:
        s.close()
        sink.close()


def _one(session: DuckSession, sql: str) -> Any:
    row = session.execute(sql).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("ATTACH 'x.duckdb' AS x", "ATTACH"),
        ("DETACH x", "DETACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("PRAGMA version", "PRAGMA"),
        ("EXPLAIN SELECT 1", "EXPLAIN"),
        ("CALL checkpoint()", "CALL"),
        ("VACUUM", "VACUUM"),
        ("SET enable_external_access = true", "SET"),
    ],
)
def test_anything_but_a_query_is_named_and_refused(sql: str, kind: str) -> None:
    """Statements sqlglot keeps as raw commands are refused, naming their keyword."""
    with pytest.raises(ConfigError, match=f"got {kind}$"):
        reads.read_only(sql, "duckdb")


def test_a_read_only_transaction_refuses_a_write_that_got_past_the_parsers(
    session: DuckSession,
) -> None:
    """The third lock: inside the query's transaction DuckDB itself refuses to write."""
    with pytest.raises(duckdb.TransactionException, match="read-only"):  # noqa: SIM117
        with reads.read_only_transaction(session):
            session.execute("DELETE FROM raw_orders")
    assert _one(session, "SELECT count(*) FROM raw_orders") > 0


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
    ],
)
def test_files_and_network_are_out_of_reach(session: DuckSession, sql: str) -> None:
    """No file or URL can be read from SQL: refused as the user's input (exit 2), one line."""
    with pytest.raises(ConfigError, match=r"^query: refused: PermissionException") as caught:
        reads.query(session, sql)
    assert "\n" not in str(caught.value)


def test_rows_are_capped_and_said_so(session: DuckSession) -> None:
    """At most `limit` rows come back; `more` says there were others."""
    capped = reads.query(session, "SELECT * FROM raw_orders", limit=10)
    assert len(capped.rows) == 10 and capped.more
    whole = reads.query(session, "SELECT count(*) AS n FROM raw_orders", limit=10)
    assert whole.columns == ["n"] and not whole.more


def test_a_slow_query_is_interrupted_at_its_time_limit(session: DuckSession) -> None:
    """A query past its time limit is interrupted (exit 1), and the session is usable after."""
    with pytest.raises(reads.QueryTimeout, match=r"time limit of 0\.5 s"):
        reads.query(session, "SELECT count(*) FROM range(100000000000)", seconds=0.5)
    assert reads.query(session, "SELECT 1 AS one").rows == [(1,)]


def test_a_snapshot_verifies_elsewhere_and_leaves_the_target_as_it_was(
    session: DuckSession,
) -> None:
    """`verify` during a run: a streamed snapshot checked apart passes; the target is unchanged."""
    session.execute("DELETE FROM orders_aggregated WHERE order_month = 12")  # stale on purpose
    before = _one(session, "SELECT count(*) FROM orders_aggregated")
    sent = io.BytesIO()
    snapshot.export(session, sent.write)
    sent.seek(0)
    tables = snapshot.receive(sent)
    assert sum(len(b) for b in tables["raw_orders"]) == _one(
        session, "SELECT count(*) FROM raw_orders"
    )
    copy = snapshot.load(tables)
    try:
        report = check.verify(copy, Warehouse.LOCAL, "0")
    finally:
        copy.close()
    assert report.ok, [c for c in report.checks if not c.ok]
    assert _one(session, "SELECT count(*) FROM orders_aggregated") == before


def test_a_snapshot_that_breaks_off_says_so() -> None:
    """A snapshot cut short, or ending in an error frame, is one clear error, never a hang."""
    with pytest.raises(snapshot.Broken, match="broke off") as cut:
        snapshot.receive(io.BytesIO(b'{"table": "raw_orders", "bytes": 100}\nabc'))
    assert cut.value.retry
    failed = snapshot.frame({"error": "the service is stopping", "exit": 1, "retry": True})
    with pytest.raises(snapshot.Broken, match="stopping") as stopping:
        snapshot.receive(io.BytesIO(failed))
    assert stopping.value.retry
