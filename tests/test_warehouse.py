"""The layers, materialised locally from sql/, equal an aggregate computed in plain Python.

The expected figures come from the in-memory replay of a seeded stream (integer
cents, epoch seconds), not from any SQL: on DuckDB and on the emulator (the real
Snowflake connector over HTTP to fakesnow), every metric of every month.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from service.config import Names
from service.pipeline.generator import OrderStream, replay
from service.pipeline.router import partition_of
from service.sinks.base import Warehouse
from service.sinks.duckdb import DuckSession
from service.sinks.snowflake import SnowSession
from service.verify import check
from service.warehouse import layers, scheduler, sqlfiles

from .conftest import identity

Rows = Mapping[str, tuple[Any, ...]]
# fakesnow's own note about copying Arrow results: not ours to act on.
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output:UserWarning")


def python_aggregate(state: Rows) -> dict[tuple[int, int], dict[str, Any]]:
    """orders_aggregated by hand: the seed's formulas over (id, cust, ts, status, cents, ...)."""
    months: dict[tuple[int, int], list[tuple[Any, ...]]] = defaultdict(list)
    for r in state.values():
        d = dt.datetime.fromtimestamp(r[2], dt.UTC)
        months[(d.year, d.month)].append(r)
    out = {}
    for key, rs in months.items():
        cents = [r[4] for r in rs]
        out[key] = {
            "total_orders": len({r[0] for r in rs}),
            "total_revenue": sum(cents),
            "average_order_value": Decimal(sum(cents)) / 100 / len(rs),
            "unique_customers": len({r[1] for r in rs}),
            "total_items_sold": sum(r[6] for r in rs),
            "total_delivered_revenue": sum(r[4] for r in rs if r[3] == "DELIVERED"),
            "total_high_value_orders": sum(c for c in cents if c > 100_00),
            "total_low_value_orders": sum(c for c in cents if c <= 100_00),
            "high_value_order_count": sum(1 for c in cents if c > 100_00),
            "low_value_order_count": sum(1 for c in cents if c <= 100_00),
        }
    return out


MONEY = {
    "total_revenue",
    "total_delivered_revenue",
    "total_high_value_orders",
    "total_low_value_orders",
}


def assert_matches(
    table: dict[tuple[int, int], dict[str, Any]], want: dict[tuple[int, int], dict[str, Any]]
) -> None:
    assert sorted(table) == sorted(want)
    assert len(want) >= 3, "the stream spans several months"
    for month, metrics in want.items():
        got = table[month]
        for name, value in metrics.items():
            if name in MONEY:  # exact to the cent (the emulator returns a float)
                assert round(Decimal(str(got[name])) * 100) == value, (month, name)
            elif name == "average_order_value":
                assert abs(Decimal(str(got[name])) - value) < Decimal("0.000001"), (month, name)
            else:
                assert int(got[name]) == value, (month, name)


def aggregated(con: Any) -> dict[tuple[int, int], dict[str, Any]]:
    """orders_aggregated of a DuckDB connection or a connector connection."""
    local = isinstance(con, duckdb.DuckDBPyConnection)
    session = DuckSession(con) if local else SnowSession(con, autocommit=True)
    return {(int(k[0]), int(k[1])): v for k, v in check.read_aggregated(session).items()}


# -- DuckDB ---------------------------------------------------------------------------------


def load_duckdb(con: duckdb.DuckDBPyConnection, state: Rows) -> None:
    for stmt in sqlfiles.statements("00", Names(), dialect="duckdb"):
        con.execute(stmt)
    cols = list(zip(*state.values(), strict=True))
    con.register("src", pa.table({f"c{i}": list(c) for i, c in enumerate(cols)}))
    con.execute(
        "INSERT INTO raw_orders SELECT c0, c1, make_timestamp(c2 * 1000000), c3, c4 / 100, c5, c6 "
        "FROM src"
    )
    con.unregister("src")


def test_aggregate_equals_python_on_duckdb() -> None:
    """After a refresh, orders_aggregated on DuckDB equals the Python aggregate of the replay."""
    state = replay(identity(), 20_000)
    con = duckdb.connect()
    load_duckdb(con, state)
    layers.apply_ddl(DuckSession(con), Warehouse.LOCAL, Names())
    assert_matches(aggregated(con), python_aggregate(state))
    # A refresh follows changes: delete a month's worth of orders and refresh.
    gone = min(python_aggregate(state))
    con.execute("DELETE FROM raw_orders WHERE month(order_date) = ?", [gone[1]])
    rows = layers.refresh(DuckSession(con), Warehouse.LOCAL)
    left = {
        k: v for k, v in state.items() if dt.datetime.fromtimestamp(v[2], dt.UTC).month != gone[1]
    }
    assert rows == len(left) + len(python_aggregate(left))
    assert_matches(aggregated(con), python_aggregate(left))


# -- the emulator -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emulator() -> Iterator[dict[str, Any]]:
    """A fakesnow server in this process; yields what ``snowflake.connector.connect`` takes."""
    fakesnow = pytest.importorskip("fakesnow")
    pytest.importorskip("uvicorn", reason="fakesnow's server needs fakesnow[server]")
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error", "snowflake.connector"):
        logging.getLogger(name).setLevel(logging.ERROR)
    start = fakesnow.server
    if callable(start):
        with start() as kw:
            yield kw
        return
    # Once anything imports the module fakesnow.server, the package's server() helper is
    # shadowed by it: start the app the way the emulator target does.
    from service.sinks.emulator import Emulator

    with Emulator() as em:
        yield {
            "user": "u",
            "password": "p",
            "account": "fakesnow",
            "host": em.host,
            "port": em.port,
            "protocol": "http",
            "network_timeout": 10,
        }


@pytest.fixture
def sf_connect(emulator: dict[str, Any]) -> Iterator[Any]:
    """A function that opens a new connection to a database of this test's own."""
    import snowflake.connector

    # One database per test: every session of a fakesnow process shares one catalog.
    db = f"T{uuid.uuid4().hex[:12].upper()}"
    opened: list[Any] = []

    def connect() -> Any:
        con = snowflake.connector.connect(**emulator, database=db, schema="PUBLIC")
        opened.append(con)
        return con

    yield connect
    for con in opened:
        con.close()


@pytest.fixture
def sf(sf_connect: Any) -> Any:
    con = sf_connect()
    for stmt in sqlfiles.statements("00", Names(), dialect="snowflake"):
        con.cursor().execute(stmt)
    return con


def _naive(epoch: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).replace(tzinfo=None)


def load_snowflake(con: Any, state: Rows) -> None:
    rows = [
        {
            "id": r[0],
            "cust": r[1],
            "ts": _naive(r[2]),
            "status": r[3],
            "amount": Decimal(r[4]) / 100,
            "prod": r[5],
            "qty": r[6],
        }
        for r in state.values()
    ]
    con.cursor().executemany(
        "INSERT INTO raw_orders (order_id, customer_id, order_date, status, amount, product_id, "
        "quantity) VALUES (%(id)s, %(cust)s, %(ts)s, %(status)s, %(amount)s, %(prod)s, %(qty)s)",
        rows,
    )


def test_aggregate_equals_python_on_the_emulator(sf: Any) -> None:
    """The same check through the real Snowflake connector: the SELECTs from sql/ on fakesnow."""
    state = replay(identity(), 1_500)
    load_snowflake(sf, state)
    layers.apply_ddl(SnowSession(sf, autocommit=True), Warehouse.LOCAL, Names())
    assert_matches(aggregated(sf), python_aggregate(state))
    # Change some orders, refresh, and the aggregate follows.
    changed = sorted(state)[:40]
    sf.cursor().executemany(
        "UPDATE raw_orders SET status = 'DELIVERED', amount = 250.00 WHERE order_id = %s",
        [(oid,) for oid in changed],
    )
    for oid in changed:
        r = state[oid]
        state[oid] = r._replace(status="DELIVERED", amount_cents=25_000)
    layers.refresh(SnowSession(sf, autocommit=True), Warehouse.LOCAL)
    assert_matches(aggregated(sf), python_aggregate(state))


def test_verify_holds_on_the_emulator(sf: Any) -> None:
    """verify's replay, checksum and recomputation work through the connector (floats from SUM)."""
    ident = identity()
    n = 800
    load_snowflake(sf, replay(ident, n))
    ckpts = {p: 0 for p in range(ident.partitions)}
    for ev in OrderStream(ident).take(n):
        p = partition_of(ev.order_id, ident.partitions)
        ckpts[p] = max(ckpts[p], ev.seq)
    cur = sf.cursor()
    now = dt.datetime(2026, 1, 1)
    stream = ("0", json.dumps(ident.as_dict()), now)
    cur.execute("INSERT INTO cdc_streams (shard, identity, created_at) VALUES (%s, %s, %s)", stream)
    cur.executemany(
        "INSERT INTO cdc_checkpoints (shard, partition_id, last_seq, updated_at) "
        "VALUES (%s, %s, %s, %s)",
        [("0", p, s, now) for p, s in ckpts.items()],
    )
    layers.apply_ddl(SnowSession(sf, autocommit=True), Warehouse.LOCAL, Names())
    report = check.verify(SnowSession(sf, autocommit=True), Warehouse.LOCAL, "0")
    assert report.ok, report.checks
    cur.execute("UPDATE raw_orders SET quantity = quantity + 1 WHERE order_id = 'ORD-0-0000000001'")
    bad = check.verify(SnowSession(sf, autocommit=True), Warehouse.LOCAL, "0")
    assert not bad.ok
    assert "changed ORD-0-0000000001: quantity" in bad.checks[0].differences[0]


def test_task_history_on_the_emulator(sf: Any, sf_connect: Any) -> None:
    """The local task runs on a connection of its own and records its runs (pyformat, times)."""
    load_snowflake(sf, replay(identity(), 300))
    layers.apply_ddl(SnowSession(sf, autocommit=True), Warehouse.LOCAL, Names())
    scheduled = dt.datetime(2026, 1, 1, 12, 0, 0, 250_000)
    ok = scheduler.run_task(
        scheduler.sessions(lambda: SnowSession(sf_connect(), autocommit=True)), scheduled
    )
    sf.cursor().execute("ALTER TABLE raw_orders RENAME TO raw_orders_gone")
    failed = scheduler.run_task(
        scheduler.sessions(lambda: SnowSession(sf_connect(), autocommit=True)),
        scheduled + dt.timedelta(minutes=2),
    )
    assert (ok.state, failed.state) == ("SUCCEEDED", "FAILED")
    assert failed.error is not None and "raw_orders" in failed.error.lower()
    columns, rows = scheduler.history(SnowSession(sf, autocommit=True), local=True)
    assert columns == list(scheduler.HISTORY_COLUMNS)
    assert [(r[0], r[1], r[4], r[6]) for r in rows] == [
        ("REFRESH_ORDERS_AGG", scheduled, "SUCCEEDED", ok.rows),
        ("REFRESH_ORDERS_AGG", scheduled + dt.timedelta(minutes=2), "FAILED", None),
    ]
    assert rows[1][5] == failed.error


# -- Snowflake itself (no account here): the statements it would be sent ---------------------
