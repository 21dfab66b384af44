"""Pure builders for the Snowflake sink: each returns ``(sql, params)``, nothing executes.

Values are always bound by the connector (paramstyle ``pyformat``: ``%s``);
the only things formatted into SQL text are placeholders and fixed names.
Every statement that carries a list of rows is chunked so that no list has
more than Snowflake's 16,384 expressions and no statement text exceeds about
1 MB (Snowflake's limit; the connector renders pyformat values into the text,
so the estimate counts the rendered values).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

import numpy as np

from ... import clock
from ...pipeline.checkpoint import advance
from ...pipeline.events import (
    COLUMNS,
    CUSTOMER_DIGITS,
    ORDER_DIGITS,
    PRODUCT_DIGITS,
    STATUSES,
    Batch,
    Changes,
    Event,
    Op,
)
from ..base import Claim

#: Snowflake's limit on the expressions of one list (``IN (...)``, a ``VALUES`` list).
MAX_LIST = 16_384
#: Snowflake rejects statement text over 1 MB; stay clear of it.
MAX_TEXT = 900_000

_COLS = ", ".join(COLUMNS)

#: ``executemany`` rewrites this into one multi-row INSERT (pyformat only).
INSERT = (
    "INSERT INTO raw_orders (order_id, customer_id, order_date, status, amount, product_id, "
    "quantity) VALUES (%s, %s, %s, %s, %s, %s, %s)"
)

#: The updates (after-images) and the deletes of a batch, in one statement: one lock taken,
#: one round trip, where an UPDATE and a DELETE took two ("Transactions": resource locking;
#: "MERGE"). Each order is in a batch once (the net effect), so no row is matched twice.
_MERGE = (
    "MERGE INTO raw_orders USING (SELECT s.order_id, s.customer_id, "
    "CAST(s.order_date AS TIMESTAMP_NTZ) AS order_date, s.status, "
    "CAST(s.amount AS NUMBER(12, 2)) AS amount, s.product_id, "
    "CAST(s.quantity AS INTEGER) AS quantity, s.op "
    "FROM (VALUES {rows}) AS s ({cols}, op)) AS v ON raw_orders.order_id = v.order_id "
    "WHEN MATCHED AND v.op = 'd' THEN DELETE "
    "WHEN MATCHED THEN UPDATE SET customer_id = v.customer_id, order_date = v.order_date, "
    "status = v.status, amount = v.amount, product_id = v.product_id, quantity = v.quantity"
)
_MERGE_ROW = "(" + ", ".join(["%s"] * (len(COLUMNS) + 1)) + ")"
#: A row's rendered text beyond ``_row_text``: its op (``'u'`` / ``'d'``) and a separator.
_OP_TEXT = 6
#: A delete's row beyond its id: six NULLs, the op, separators and brackets.
_DELETE_ROW = 6 * 6 + _OP_TEXT + 4
T = TypeVar("T")


def pyformat(sql: str) -> str:
    """A statement written with ``?`` placeholders, for the connector's pyformat binding.

    (Its qmark binding is server-side, which the emulator mishandles.) A literal
    ``%`` is doubled, as pyformat requires.
    """
    return sql.replace("%", "%%").replace("?", "%s")


class Statement(NamedTuple):
    """One round trip. ``many``: ``params`` is a sequence of rows for ``executemany``.

    ``replayable``: running it twice in a transaction does what running it once
    does (UPDATE to an after-image, DELETE). An INSERT is not, nor is the
    checkpoint's compare-and-set.
    """

    sql: str
    params: Sequence[Any]
    many: bool = False
    replayable: bool = True

    @property
    def verb(self) -> str:
        return self.sql.split(None, 1)[0].upper()


def row(ev: Event) -> tuple[Any, ...]:
    """An event's after-image as bound values: UTC-naive datetime, Decimal amount."""
    return (
        ev.order_id,
        ev.customer_id,
        clock.from_epoch(ev.order_ts),  # type: ignore[arg-type]
        ev.status,
        Decimal(ev.amount_cents).scaleb(-2),  # type: ignore[arg-type]
        ev.product_id,
        ev.quantity,
    )


#: The rendered length of a row beyond its four strings: each of the 7 values
#: quoted (2) and separated (2), the datetime (19 to 26 characters), the amount
#: (up to 24) and the quantity (up to 12), and the row's brackets and comma (4).
_ROW_FIXED = 26 + 24 + 12 + 7 * 4 + 4


def _row_text(ev: Event) -> int:
    """An upper bound on the rendered length of an event's row (:func:`row_sizes` for columns)."""
    strings = (ev.order_id, ev.customer_id or "", ev.status or "", ev.product_id or "")
    return sum(map(len, strings)) + _ROW_FIXED


def chunk_bounds(
    sizes: Sequence[int] | np.ndarray, max_rows: int = MAX_LIST, max_text: int = MAX_TEXT
) -> list[tuple[int, int]]:
    """``(start, end)`` of consecutive runs of at most ``max_rows`` items and ``max_text``
    bytes, each as long as it can be (an item larger than ``max_text`` stands alone)."""
    max_rows = max(1, min(max_rows, MAX_LIST))
    ends = np.cumsum(np.asarray(sizes, np.int64))
    bounds, start = [], 0
    while start < len(ends):
        base = int(ends[start - 1]) if start else 0
        fits = int(np.searchsorted(ends, base + max_text, side="right"))
        end = max(start + 1, min(start + max_rows, fits))
        bounds.append((start, end))
        start = end
    return bounds


def chunks(
    items: Sequence[T], size: Callable[[T], int], max_rows: int = MAX_LIST, max_text: int = MAX_TEXT
) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``max_rows`` items and ``max_text`` bytes."""
    for start, end in chunk_bounds([size(x) for x in items], max_rows, max_text):
        yield items[start:end]


def inserts(events: Sequence[Event], max_rows: int = MAX_LIST) -> list[Statement]:
    """One ``executemany`` INSERT per chunk (the connector sends each as one multi-row INSERT)."""
    return [
        Statement(INSERT, [row(ev) for ev in chunk], many=True, replayable=False)
        for chunk in chunks(events, _row_text, max_rows, MAX_TEXT - len(INSERT))
    ]


def merges(
    updated: Sequence[Event], deleted: Sequence[str], max_rows: int = MAX_LIST
) -> list[Statement]:
    """One MERGE per chunk: the updated orders' full after-images, and the deleted ones'
    ids (the rest NULL)."""
    rows: list[tuple[Any, ...]] = [(*row(ev), "u") for ev in updated]
    rows += [(oid, *([None] * (len(COLUMNS) - 1)), "d") for oid in deleted]
    sizes = [_row_text(ev) + _OP_TEXT for ev in updated] + [len(o) + _DELETE_ROW for o in deleted]
    out = []
    for start, end in chunk_bounds(sizes, max_rows, MAX_TEXT - len(_MERGE)):
        chunk = rows[start:end]
        sql = _MERGE.format(rows=", ".join([_MERGE_ROW] * len(chunk)), cols=_COLS)
        out.append(Statement(sql, [v for r in chunk for v in r]))
    return out


def checkpoint(claim: Claim, checkpoints: dict[int, int], now: dt.datetime) -> Statement:
    """The batch's checkpoint UPDATE (:func:`service.pipeline.checkpoint.advance`), for the connector.

    Not replayable: its row count is the compare-and-set's verdict, and a copy the
    connector re-sent after a lost reply would find nothing left to move.
    """
    sql, params = advance(claim.shard, claim.epoch, checkpoints, now)
    return Statement(pyformat(sql), params, replayable=False)


def plan(batch: Batch, claim: Claim, now: dt.datetime, max_rows: int = MAX_LIST) -> list[Statement]:
    """Every statement of a batch's transaction, in order (COMMIT is the caller's).

    The INSERTs first: they take no lock. Then what locks raw_orders until COMMIT (the
    MERGE), then the checkpoint UPDATE, last, which must change one row per partition.
    """
    return [
        *inserts(batch.inserts, max_rows),
        *merges(batch.updates, batch.deletes, max_rows),
        checkpoint(claim, batch.checkpoints, now),
    ]


#: What each request of a batch's transaction is, for a model of Snowflake's locks: a verb
#: and the table whose lock it takes ('' for none). UPDATE, DELETE and MERGE on a table hold
#: a lock that keeps the others from running in parallel on that table until COMMIT; most
#: INSERTs take none ("Transactions": resource locking).
Trip = tuple[str, str]


def trips(batch: Batch, max_rows: int = MAX_LIST) -> list[Trip]:
    """The requests one batch costs, in :func:`plan`'s order, then the COMMIT (no BEGIN:
    autocommit is off). Counted as ``plan`` would chunk, from the batch's columns, without
    building a row or a statement."""
    ins, upd, dels = batch.of(Op.INSERT), batch.of(Op.UPDATE), batch.of(Op.DELETE)
    n_ins = len(chunk_bounds(row_sizes(ins), max_rows, MAX_TEXT - len(INSERT)))
    merged = np.concatenate([row_sizes(upd) + _OP_TEXT, _id_sizes(dels) + _DELETE_ROW])
    n_merge = len(chunk_bounds(merged, max_rows, MAX_TEXT - len(_MERGE)))
    return [
        *[("INSERT", "")] * n_ins,
        *[("MERGE", "raw_orders")] * n_merge,
        ("UPDATE", "cdc_checkpoints"),
        ("COMMIT", ""),
    ]


def round_trips(batch: Batch, max_rows: int = MAX_LIST) -> int:
    """Requests one batch costs: its statements and the COMMIT."""
    return len(trips(batch, max_rows))


def locked_trips(batch_trips: list[Trip]) -> int:
    """The requests from the first one that takes a lock to the COMMIT that releases it: the
    part of a batch that batches of other workers cannot overlap."""
    first = next((i for i, (_verb, table) in enumerate(batch_trips) if table), len(batch_trips))
    return len(batch_trips) - first


_POWERS_OF_TEN = np.array([10**k for k in range(1, 19)], np.int64)


def _digits(numbers: np.ndarray, width: int) -> np.ndarray:
    """The length of each zero-padded number (``str(n).zfill(width)``)."""
    lengths: np.ndarray = np.maximum(width, np.searchsorted(_POWERS_OF_TEN, numbers, "right") + 1)
    return lengths


_STATUS_LEN = np.array([len(s) for s in STATUSES], np.int64)


def _id_sizes(rows: Changes) -> np.ndarray:
    sizes: np.ndarray = len(rows.prefix) + _digits(rows.order_no, ORDER_DIGITS)
    return sizes


def row_sizes(rows: Changes) -> np.ndarray:
    """``_row_text`` of every row, from the columns."""
    sizes: np.ndarray = (
        _id_sizes(rows)
        + len("CUST-") + _digits(rows.customer + 1, CUSTOMER_DIGITS)
        + _STATUS_LEN[rows.status]
        + len("PROD-") + _digits(rows.product + 1, PRODUCT_DIGITS)
        + _ROW_FIXED
    )  # fmt: skip
    return sizes


def use_schema(database: str, schema: str) -> list[str]:
    """Create (if missing) and select the database and schema; names are validated identifiers."""
    return [
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"CREATE SCHEMA IF NOT EXISTS {database}.{schema}",
        f"USE SCHEMA {database}.{schema}",
    ]
