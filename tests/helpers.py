"""Reading a target back as comparable rows."""

from __future__ import annotations

from pathlib import Path

import duckdb

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
