"""Reading a target back as comparable rows."""

from __future__ import annotations

from pathlib import Path

import duckdb

from service.config import Names
from service.pipeline.generator import StreamIdentity
from service.warehouse import sqlfiles

ROWS_SQL = (
    "SELECT order_id, customer_id, CAST(epoch(order_date) AS BIGINT), status, "
    "CAST(amount * 100 AS BIGINT), product_id, quantity FROM raw_orders"
)


def duckdb_rows(path: Path) -> dict[str, tuple[object, ...]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {r[0]: tuple(r) for r in con.execute(ROWS_SQL).fetchall()}
    finally:
        con.close()


def duckdb_checkpoints(path: Path) -> dict[int, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return dict(con.execute("SELECT partition_id, last_seq FROM cdc_checkpoints").fetchall())
    finally:
        con.close()


def expected_at_checkpoints(
    ident: StreamIdentity, ckpts: dict[int, int]
) -> dict[str, tuple[object, ...]]:
    """The table a target must hold given its per-partition checkpoints: computed event by
    event (the service's replay works on columns), as an independent oracle."""
    from service.pipeline.events import Op
    from service.pipeline.generator import OrderStream
    from service.pipeline.router import partition_of

    stream = OrderStream(ident)
    state: dict[str, tuple[object, ...]] = {}
    top = max(ckpts.values(), default=0)
    while stream.seq < top:
        for ev in stream.take(min(10_000, top - stream.seq)):
            if ev.seq > ckpts.get(partition_of(ev.order_id, ident.partitions), 0):
                continue
            if ev.op is Op.DELETE:
                del state[ev.order_id]
            else:
                state[ev.order_id] = tuple(ev.row())
    return state


def two_orders(files: str, first_quantity: int) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the tables of ``files`` (sql/, translated) and two orders in
    raw_orders: 'a' (DELIVERED, 150.00, quantity ``first_quantity``), 'b' (PENDING, 60.00, 2)."""
    con = duckdb.connect()
    for stmt in sqlfiles.statements(files, Names(), dialect="duckdb"):
        con.execute(stmt)
    con.execute(
        "INSERT INTO raw_orders VALUES ('a', 'c1', TIMESTAMP '2026-01-05 10:00:00', 'DELIVERED', "
        "150.00, 'p', ?), ('b', 'c2', TIMESTAMP '2026-01-06 10:00:00', 'PENDING', 60.00, 'p', 2)",
        [first_quantity],
    )
    return con
