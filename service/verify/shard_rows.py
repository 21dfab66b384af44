"""A shard's rows of ``raw_orders``, read by ranges of order ids, and the rows of no shard range.

Order ids are ``ORD-<shard>-`` and the number zero-padded to ten digits; past
9,999,999,999 they get longer, and as text ``ORD-0-10000000000`` sorts between
``ORD-0-1000000000`` and ``ORD-0-1000000001``. So a range of order numbers is
read with one query per id width (``LENGTH(order_id) = w`` beside the text
bounds), and the first range of a width starts at the bare prefix and the last
ends past it: consecutive number ranges then tile every id of the prefix and
those widths, well-formed or not, and each is read once. The rest of the table
(other shards, ids of other widths) is read once, sorted.

The queries are written in Snowflake's dialect and translated for the session;
a text range lets DuckDB's zone maps (and Snowflake's pruning) skip the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import sqlglot

from ..pipeline.events import ORDER_DIGITS
from ..sinks.base import SqlSession
from .monthly import Rows

#: raw_orders as the stream carries it (epoch seconds, integer cents), in Snowflake's dialect.
_SELECT = (
    "SELECT order_id, customer_id, DATE_PART(EPOCH_SECOND, order_date), status, "
    "CAST(amount * 100 AS BIGINT), product_id, quantity FROM raw_orders"
)
_SPAN_SQL = (
    f"{_SELECT} WHERE order_id >= ? AND order_id < ? AND LENGTH(order_id) = ? ORDER BY order_id"
)
_OTHERS_SQL = (
    f"{_SELECT} WHERE NOT (order_id >= ? AND order_id < ? AND LENGTH(order_id) BETWEEN ? AND ?) "
    "ORDER BY order_id"
)


@dataclass(frozen=True, slots=True)
class Span:
    """Order ids of one length in ``[lo, hi)`` as text: one query's range."""

    lo: str
    hi: str
    length: int


def width(number: int) -> int:
    """Digits of an order number as its id writes it (zero-padded to ORDER_DIGITS)."""
    return max(ORDER_DIGITS, len(str(number)))


def after_prefix(prefix: str) -> str:
    """The least text above every text that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def spans(prefix: str, low: int, high: int | None, widest: int) -> list[Span]:
    """The id ranges holding order numbers ``[low, high)`` (to ``widest`` digits if
    ``high`` is None), one per id width.

    Among ids of one width text order is number order; the first range of a
    width starts at the prefix and the last ends past it, so the ranges of
    consecutive number ranges tile every id of the prefix and those widths,
    well-formed or not.
    """
    out = []
    top = widest if high is None else width(max(low, high - 1))
    for w in range(width(low), top + 1):
        first, end = (0 if w == ORDER_DIGITS else 10 ** (w - 1)), 10**w
        a, b = max(low, first), end if high is None else min(high, end)
        if a < b:
            lo = prefix if a == first else prefix + str(a).zfill(w)
            hi = after_prefix(prefix) if b == end else prefix + str(b).zfill(w)
            out.append(Span(lo, hi, len(prefix) + w))
    return out


def _sql(session: SqlSession, text: str) -> str:
    return _transpiled(text, session.dialect)


@functools.cache
def _transpiled(text: str, dialect: str) -> str:
    """Once per statement and dialect (a verify reads hundreds of spans with one statement)."""
    return sqlglot.transpile(text, read="snowflake", write=dialect)[0]


def read_span(session: SqlSession, span: Span) -> list[Any]:
    sql = _sql(session, _SPAN_SQL)
    return list(session.execute(sql, [span.lo, span.hi, span.length]).fetchall())


def read_others(session: SqlSession, prefix: str, widest: int, batch: int) -> Iterator[Rows]:
    """The rows outside the shard's ranges, sorted by order_id, in batches that never split
    one order_id's rows."""
    sql = _sql(session, _OTHERS_SQL)
    lo, hi = prefix, after_prefix(prefix)
    cur = session.execute(sql, [lo, hi, len(prefix) + ORDER_DIGITS, len(prefix) + widest])
    carry: list[Any] = []
    while True:
        got = cur.fetchmany(batch)
        rows = carry + list(got)
        if not got:
            if rows:
                yield Rows.from_tuples(rows)
            return
        cut = len(rows)
        while cut > 0 and rows[cut - 1][0] == rows[-1][0]:
            cut -= 1
        carry = rows[cut:]
        if cut:
            yield Rows.from_tuples(rows[:cut])
