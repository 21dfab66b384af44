"""Events in columns: the conversions at the edges agree with the one-row-at-a-time forms."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from service.pipeline.events import Changes, Event, Op, order_id
from service.pipeline.generator import OrderStream
from service.pipeline.net_effect import net_effect
from service.pipeline.router import partition_of, partitions_of
from service.sinks.duckdb import DuckDBSink, batch_table, order_ids

from .conftest import identity
from .helpers import duckdb_rows


def test_events_and_columns_round_trip() -> None:
    """Changes -> Events -> Changes gives the same events back (deletes carry only their id)."""
    changes = OrderStream(identity(shard="LONG_7")).take_changes(5_000)
    events = changes.events()
    assert Changes.from_events(events).events() == events
    assert {e.op for e in events} == {Op.INSERT, Op.UPDATE, Op.DELETE}
    assert all(e.customer_id is None for e in events if e.op is Op.DELETE)


def test_arrow_ids_equal_the_python_ids_at_any_width() -> None:
    """The DuckDB sink's ids (Arrow kernels) are events.order_id's, wider numbers included."""
    numbers = np.array([1, 42, 9_999_999_999, 12_345_678_901], np.int64)
    assert order_ids("ORD-x-", numbers).to_pylist() == [order_id("ORD-x-", int(n)) for n in numbers]


def test_batch_table_holds_the_rows_as_events_say() -> None:
    """The Arrow table a DuckDB batch is written from: every id, status and amount as text/decimal."""
    changes = OrderStream(identity()).take_changes(3_000)
    table = batch_table(changes).to_pylist()
    for row, ev in zip(table, changes.events(), strict=True):
        assert row["order_id"] == ev.order_id
        if ev.op is not Op.DELETE:
            assert (row["customer_id"], row["status"], row["product_id"], row["quantity"]) == (
                ev.customer_id, ev.status, ev.product_id, ev.quantity,
            )  # fmt: skip
            assert row["amount"] * 100 == ev.amount_cents


def test_partitions_are_stable_and_balanced() -> None:
    """One order, one partition, whatever the form of its id; consecutive orders spread evenly."""
    numbers = np.arange(1, 200_001, dtype=np.int64)
    parts = partitions_of(numbers, 64)
    assert all(partition_of(order_id("ORD-0-", int(n)), 64) == p for n, p in
               zip(numbers[:500], parts[:500], strict=True))  # fmt: skip
    counts = np.bincount(parts, minlength=64)
    assert counts.min() > 0.9 * counts.mean() and counts.max() < 1.1 * counts.mean()
    assert set(partitions_of(numbers, 7).tolist()) == set(range(7))


def test_duckdb_updates_and_deletes_orders_whose_numbers_outgrow_ten_digits(tmp_path: Path) -> None:
    """Past order 9,999,999,999 ids get longer and sort differently as text: still found."""
    path = tmp_path / "wide.duckdb"
    sink = DuckDBSink(path, "0", workers=1)
    sink.open()
    sink.claim_stream(json.dumps(identity().as_dict()), 64, reset=False)
    writer = sink.writer(0)
    narrow, wide, wider = (order_id("ORD-0-", n) for n in (9_999_999_999, 10**10, 10**10 + 1))

    def ev(seq: int, op: Op, oid: str, status: str = "PENDING") -> Event:
        return Event(seq, op, oid, "CUST-0000001", 0, status, 100, "PROD-0001", 1)

    first = [ev(1, Op.INSERT, narrow), ev(2, Op.INSERT, wide), ev(3, Op.INSERT, wider)]
    writer.apply(net_effect(0, Changes.from_events(first), [0, 0, 0]))
    second = [ev(4, Op.UPDATE, narrow, "PROCESSING"), ev(5, Op.UPDATE, wide, "CANCELLED"),
              Event(6, Op.DELETE, wider)]  # fmt: skip
    writer.apply(net_effect(0, Changes.from_events(second), [0, 0, 0]))
    writer.close()
    sink.close()
    rows = duckdb_rows(path)
    assert {oid: row[3] for oid, row in rows.items()} == {narrow: "PROCESSING", wide: "CANCELLED"}
