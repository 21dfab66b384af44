"""`ecomm-cdc verify`: exit 0 on a target the pipeline wrote, exit 1 with the first difference
on one that was tampered with (a row changed, a row deleted, a duplicate inserted, ...)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from service import clock, verify
from service.sinks.base import Warehouse
from service.sinks.duckdb import DuckSession

from .conftest import START, cli

RUN = ("--events", "20000", "--seed", "7", "--start", START)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DuckDB target the real pipeline wrote (20,000 events of seed 7)."""
    path = tmp_path_factory.mktemp("verify") / "written.duckdb"
    done = cli("run", *RUN, "--duckdb-path", str(path))
    assert done.returncode == 0, done.stderr + done.stdout
    return path


def _copy(
    written: Path, tmp_path: Path, tamper: Callable[[duckdb.DuckDBPyConnection], None]
) -> Path:
    path = tmp_path / "target.duckdb"
    shutil.copy(written, path)
    con = duckdb.connect(str(path))
    try:
        tamper(con)
    finally:
        con.close()
    return path


def _verify(path: Path) -> tuple[int, str]:
    done = cli("verify", "--target", "duckdb", "--duckdb-path", str(path))
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout


def _an_order(con: duckdb.DuckDBPyConnection, where: str = "TRUE") -> str:
    row = con.execute(f"SELECT min(order_id) FROM raw_orders WHERE {where}").fetchone()  # noqa: S608
    assert row is not None and row[0] is not None
    return str(row[0])


def test_untouched_target_verifies(written: Path, tmp_path: Path) -> None:
    """What the pipeline wrote equals the replay, and the aggregate its recomputation: exit 0."""
    code, out = _verify(_copy(written, tmp_path, lambda con: None))
    assert code == 0, out
    assert out.count(" ok ") == 4 and "FAILED" not in out
    assert "applied up to seq 20,000" in out


def test_a_changed_row_fails(written: Path, tmp_path: Path) -> None:
    """One order's amount changed by a cent: exit 1, naming the order and the column."""
    seen: dict[str, str] = {}

    def tamper(con: duckdb.DuckDBPyConnection) -> None:
        seen["id"] = oid = _an_order(con)
        con.execute("UPDATE raw_orders SET amount = amount + 0.01 WHERE order_id = ?", [oid])

    code, out = _verify(_copy(written, tmp_path, tamper))
    assert code == 1
    assert f"changed {seen['id']}: amount" in out
    assert "0 missing, 0 unexpected, 1 changed" in out


def test_a_deleted_row_fails(written: Path, tmp_path: Path) -> None:
    """One order deleted: exit 1, the order reported missing."""
    seen: dict[str, str] = {}

    def tamper(con: duckdb.DuckDBPyConnection) -> None:
        seen["id"] = oid = _an_order(con, "status = 'SHIPPED'")
        con.execute("DELETE FROM raw_orders WHERE order_id = ?", [oid])

    code, out = _verify(_copy(written, tmp_path, tamper))
    assert code == 1
    assert f"missing {seen['id']} (the stream holds it)" in out


def test_a_duplicate_row_fails(written: Path, tmp_path: Path) -> None:
    """A second row with an existing order_id: exit 1, the id reported twice.

    DuckDB enforces raw_orders' primary key, Snowflake does not: to stage what
    Snowflake would accept, the table is rebuilt without the constraint first.
    """
    seen: dict[str, str] = {}

    def tamper(con: duckdb.DuckDBPyConnection) -> None:
        seen["id"] = oid = _an_order(con)
        con.execute("CREATE TABLE loose AS SELECT * FROM raw_orders")
        con.execute("DROP TABLE raw_orders")
        con.execute("ALTER TABLE loose RENAME TO raw_orders")
        con.execute("INSERT INTO raw_orders SELECT * FROM raw_orders WHERE order_id = ?", [oid])

    code, out = _verify(_copy(written, tmp_path, tamper))
    assert code == 1
    assert f"{seen['id']} appears 2 times" in out
    assert "1 rows repeat an order_id" in out  # the count/checksum check sees it too


def test_an_invalid_status_fails(written: Path, tmp_path: Path) -> None:
    """A status outside the lifecycle: exit 1 (both the status and the replay checks fail)."""

    def tamper(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("UPDATE raw_orders SET status = 'LOST' WHERE order_id = ?", [_an_order(con)])

    code, out = _verify(_copy(written, tmp_path, tamper))
    assert code == 1
    assert "status 'LOST'" in out


def test_a_stale_or_tampered_aggregate_is_caught(written: Path, tmp_path: Path) -> None:
    """orders_aggregated off by a cent (no refresh first) fails the recomputation check."""
    path = _copy(written, tmp_path, lambda con: None)
    con = duckdb.connect(str(path))
    try:
        assert verify.verify(DuckSession(con), Warehouse.LOCAL, "0").ok
        con.execute(
            "UPDATE orders_aggregated SET total_revenue = total_revenue + 0.01 "
            "WHERE order_month = 11"
        )
        report = verify.verify(DuckSession(con), Warehouse.LOCAL, "0", refresh=False)
        (agg,) = [c for c in report.checks if c.name.startswith("orders_aggregated")]
        assert not agg.ok
        assert agg.differences[0].startswith("2025-11: total_revenue")
        assert verify.verify(DuckSession(con), Warehouse.LOCAL, "0").ok, "a refresh mends it"
    finally:
        con.close()


def test_checksum_is_order_independent_and_sees_duplicates() -> None:
    """Summed row hashes: any order, one checksum; a repeated row changes it (XOR would not)."""
    rows = [("a", "c", 1, "PENDING", 100, "p", 1), ("b", "c", 2, "SHIPPED", 250, "p", 2)]
    assert verify.checksum(rows) == verify.checksum(list(reversed(rows)))
    assert verify.checksum([*rows, rows[0], rows[0]]) != verify.checksum(rows)
    assert verify.canonical(
        ("a", "c", clock.EPOCH.replace(year=1970, second=1), "PENDING", Decimal("1.00"), "p", 1)
    ) == ("a", "c", 1, "PENDING", 100, "p", 1)
    assert verify.canonical(("a", None, None, None, 0.1 + 0.2, None, None))[4] == 30
