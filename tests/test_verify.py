"""`ecomm-cdc verify`: exit 0 on a target the pipeline wrote, exit 1 with the first difference
on one that was tampered with (a row changed, a row deleted, a duplicate inserted, ...)."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable
from pathlib import Path

import duckdb
import pytest

from service.pipeline.events import id_number, order_id
from service.pipeline.generator import replay
from service.sinks.base import Warehouse
from service.sinks.duckdb import DuckSession
from service.verify import check, expected, shard_rows

from .conftest import START, cli, identity

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
        assert check.verify(DuckSession(con), Warehouse.LOCAL, "0").ok
        con.execute(
            "UPDATE orders_aggregated SET total_revenue = total_revenue + 0.01 "
            "WHERE order_month = 11"
        )
        report = check.verify(DuckSession(con), Warehouse.LOCAL, "0", refresh=False)
        (agg,) = [c for c in report.checks if c.name.startswith("orders_aggregated")]
        assert not agg.ok
        assert agg.differences[0].startswith("2025-11: total_revenue")
        assert check.verify(DuckSession(con), Warehouse.LOCAL, "0").ok, "a refresh mends it"
    finally:
        con.close()


@pytest.fixture(scope="module")
def longer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A target of 60,000 events: past the ring's 20,000 orders, so orders settle and the
    replay comes in many chunks."""
    path = tmp_path_factory.mktemp("verify") / "longer.duckdb"
    done = cli(
        "run", "--events", "60000", "--seed", "7", "--start", START, "--duckdb-path", str(path)
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return path


def test_chunked_verify_names_what_differs_in_a_middle_chunk(longer: Path, tmp_path: Path) -> None:
    """With small chunks, a changed, a missing, an extra and a repeated row inside a middle
    chunk are each named (the chunk boundaries are where the replay puts them)."""
    parts = list(expected.chunks(identity(), 60_000, rows=2_000))
    middle = parts[len(parts) // 2]
    assert 0 < len(parts) // 2 < len(parts) - 1 and middle.high is not None
    held = middle.order_no.tolist()
    gone = next(n for n in range(middle.low + 1, middle.high) if n not in set(held))
    changed, missing, repeated = (order_id("ORD-0-", n) for n in held[10:13])
    extra = order_id("ORD-0-", gone)

    def tamper(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("UPDATE raw_orders SET quantity = quantity + 1 WHERE order_id = ?", [changed])
        con.execute("DELETE FROM raw_orders WHERE order_id = ?", [missing])
        con.execute(
            "INSERT INTO raw_orders SELECT * FROM raw_orders WHERE order_id = ?", [repeated]
        )
        con.execute(
            "INSERT INTO raw_orders SELECT ?, customer_id, order_date, status, amount, product_id, "
            "quantity FROM raw_orders WHERE order_id = ?",
            [extra, changed],
        )

    con = duckdb.connect(str(_copy(longer, tmp_path, tamper)))
    try:
        report = check.verify(DuckSession(con), Warehouse.LOCAL, "0", chunk_rows=2_000)
    finally:
        con.close()
    rows, unique = report.checks[0], report.checks[1]
    assert not rows.ok and not unique.ok
    assert "1 missing, 1 unexpected, 1 changed" in rows.detail
    assert f"missing {missing} (the stream holds it)" in rows.differences
    assert f"unexpected {extra} (not in the stream)" in rows.differences
    assert any(d.startswith(f"changed {changed}: quantity ") for d in rows.differences)
    assert "1 rows repeat an order_id" in rows.differences
    assert unique.differences == [f"{repeated} appears 2 times"]


def test_two_shards_in_one_table_each_verify(tmp_path: Path) -> None:
    """Two replicas' shards in one raw_orders: each verifies against its own stream, the other
    shard's rows read once for the uniqueness, status and aggregate checks (and counted)."""
    path = tmp_path / "shards.duckdb"
    for shard, events in (("0", "30000"), ("1", "20000")):
        done = cli("run", "--events", events, "--seed", "7", "--start", START, "--shard", shard,
                   "--duckdb-path", str(path), "--no-progress")  # fmt: skip
        assert done.returncode == 0, done.stderr
    con = duckdb.connect(str(path))
    try:
        theirs = con.execute("SELECT count(*) FROM raw_orders WHERE order_id LIKE 'ORD-1-%'")
        other = theirs.fetchone()
        reports = [check.verify(DuckSession(con), Warehouse.LOCAL, s, chunk_rows=3_000)
                   for s in ("0", "1")]  # fmt: skip
    finally:
        con.close()
    assert other is not None and other[0] > 0
    assert all(r.ok for r in reports), [r.checks for r in reports]
    assert f"{other[0]:,} rows of other shards" in reports[0].checks[0].detail


def test_the_replay_in_chunks_is_the_replay_and_covers_every_number() -> None:
    """Chunks of the streamed replay tile the order numbers from 0 up and hold exactly what the
    in-memory replay holds, with checkpoints that differ by partition."""
    ident = identity()
    ckpts = {p: 40_000 + 600 * p for p in range(ident.partitions)}
    want = {id_number(k): tuple(v) for k, v in replay(ident, ckpts).items()}
    got: dict[int, tuple[object, ...]] = {}
    low: int | None = 0
    parts = list(expected.chunks(ident, ckpts, rows=1_500))
    for chunk in parts:
        assert chunk.low == low
        assert all(chunk.low <= n and (chunk.high is None or n < chunk.high)
                   for n in chunk.order_no.tolist())  # fmt: skip
        shown = check.render(chunk, "ORD-0-")
        got.update((id_number(str(shown.order_id[i])), shown.row(i)) for i in range(len(chunk)))
        low = chunk.high
    assert low is None and len(parts) > 5
    assert got == want


def test_id_ranges_find_each_id_once_across_widths() -> None:
    """Past 9,999,999,999 ids get a digit longer and interleave as text: the per-width ranges
    of consecutive number ranges still find every id of the shard exactly once, and no other."""
    numbers = [1, 9, 10**9, 10**10 - 1, 10**10, 10**10 + 5, 10**11 - 1, 10**11, 10**11 + 1]
    ids = [order_id("ORD-0-", n) for n in numbers] + ["ORD-0-x000000000", "ORD-0-00000000001"]
    others = ["ORD-1-0000000001", "ORD-00-0000000001", "ORD-0-123"]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (order_id VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", [[i] for i in ids + others])
    bounds = [0, 5, 10**10 - 1, 10**10 + 3, 10**11 + 1, None]
    found: list[str] = []
    for low, high in itertools.pairwise(bounds):
        assert low is not None
        for s in shard_rows.spans("ORD-0-", low, high, widest=12):
            found += [r[0] for r in con.execute(
                "SELECT order_id FROM t WHERE order_id >= ? AND order_id < ? AND length(order_id) = ?",
                [s.lo, s.hi, s.length]).fetchall()]  # fmt: skip
    assert sorted(found) == sorted(ids)
