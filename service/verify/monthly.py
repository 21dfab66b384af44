"""orders_aggregated recomputed in Python, in bounded memory, with SQL's NULL rules.

Rows arrive in batches (:class:`Rows`, columns of one batch of ``raw_orders``);
each month keeps running totals, and a bitmap of its customers (bounded by the
customer count), never the rows. Money is integer cents, summed exactly.
This is verify's independent check of the SQL in ``sql/011_orders_aggregated.sql``:
it shares nothing with it but the formulas' meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from ..pipeline.events import Status

#: Month key: months since 1970-01 (UTC), or NULL_MONTH where order_date is NULL.
NULL_MONTH = -(2**62)  # not -1: that is 1969-12 (orders before the epoch are allowed)
HIGH_VALUE_CENTS = 10_000  # order_value_category = 'High Value': amount > 100
_NONE = np.array(None, object)


def _ints(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """A column of integers (or NULLs) as (values with 0 for NULL, NULL mask)."""
    try:
        arr = pa.array(values, pa.int64())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # a driver's Decimal or float
        arr = pa.array([None if v is None else int(v) for v in values], pa.int64())
    return arr.fill_null(0).to_numpy(), arr.is_null().to_numpy(zero_copy_only=False)


def _texts(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), object)
    out[:] = values
    return out


@dataclass(frozen=True, slots=True)
class Rows:
    """A batch of ``raw_orders`` rows as columns: text as object arrays (None for NULL),
    integers (epoch seconds, cents) with a NULL mask beside them."""

    order_id: np.ndarray
    customer_id: np.ndarray
    ts: np.ndarray
    ts_null: np.ndarray
    status: np.ndarray
    cents: np.ndarray
    cents_null: np.ndarray
    product_id: np.ndarray
    quantity: np.ndarray
    quantity_null: np.ndarray

    @classmethod
    def from_tuples(cls, rows: Sequence[Sequence[Any]]) -> Rows:
        """Rows of (order_id, customer_id, epoch s, status, cents, product_id, quantity)."""
        cols: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [()] * 7
        ts, ts_null = _ints(cols[2])
        cents, cents_null = _ints(cols[4])
        qty, qty_null = _ints(cols[6])
        return cls(
            _texts(cols[0]), _texts(cols[1]), ts, ts_null, _texts(cols[3]),
            cents, cents_null, _texts(cols[5]), qty, qty_null,
        )  # fmt: skip

    def __len__(self) -> int:
        return len(self.order_id)

    def take(self, index: np.ndarray) -> Rows:
        return Rows(*(getattr(self, f)[index] for f in self.__dataclass_fields__))

    def months(self) -> np.ndarray:
        """Each row's month key."""
        m = self.ts.astype("datetime64[s]").astype("datetime64[M]").astype(np.int64)
        return np.where(self.ts_null, NULL_MONTH, m)

    def row(self, i: int) -> tuple[Any, ...]:
        """Row ``i`` as (order_id, customer_id, epoch s, status, cents, product_id, quantity)."""
        return (
            self.order_id[i], self.customer_id[i],
            None if self.ts_null[i] else int(self.ts[i]), self.status[i],
            None if self.cents_null[i] else int(self.cents[i]), self.product_id[i],
            None if self.quantity_null[i] else int(self.quantity[i]),
        )  # fmt: skip


@dataclass(slots=True)
class _Month:
    rows: int = 0
    ids: int = 0  # distinct non-NULL order ids
    customers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # by Monthly's index
    # (sum of cents, rows whose value is not NULL) per SUM: SQL's SUM is NULL when all are
    revenue: list[int] = field(default_factory=lambda: [0, 0])
    items: list[int] = field(default_factory=lambda: [0, 0])
    delivered: list[int] = field(default_factory=lambda: [0, 0])
    high: list[int] = field(default_factory=lambda: [0, 0])
    low: list[int] = field(default_factory=lambda: [0, 0])
    high_count: int = 0


def _add(total: list[int], values: np.ndarray, counted: np.ndarray) -> None:
    total[0] += int(values[counted].sum())
    total[1] += int(np.count_nonzero(counted))


def _money(total: list[int]) -> Decimal | None:
    return Decimal(total[0]) / 100 if total[1] else None


class Monthly:
    """Running totals per month of the rows added so far."""

    def __init__(self) -> None:
        self._months: dict[int, _Month] = {}
        #: Every customer id seen, numbered: a month's customers are a bitmap over these.
        self._customer_index: dict[Any, int] = {}

    def _customers(self, ids: np.ndarray) -> np.ndarray:
        """The index of each customer id (numbering the new ones)."""
        distinct, where = np.unique(ids, return_inverse=True)
        index = self._customer_index
        for c in distinct.tolist():
            index.setdefault(c, len(index))
        numbers = np.array([index[c] for c in distinct.tolist()], np.int64)
        out: np.ndarray = numbers[where]
        return out

    def add(self, rows: Rows, first_of_id: np.ndarray) -> None:
        """Add a batch. ``first_of_id`` marks, per row, whether its (order_id, month) pair is
        new: rows of one order_id must all be in one batch, or the caller tracks that."""
        keys = rows.months()
        high = ~rows.cents_null & (rows.cents > HIGH_VALUE_CENTS)
        delivered = rows.status == Status.DELIVERED.value
        has_id = np.not_equal(rows.order_id, _NONE)
        has_customer = np.not_equal(rows.customer_id, _NONE)
        amount = ~rows.cents_null
        for key in np.unique(keys).tolist():
            m = keys == key
            month = self._months.setdefault(key, _Month())
            month.rows += int(np.count_nonzero(m))
            month.ids += int(np.count_nonzero(m & has_id & first_of_id))
            seen = self._customers(rows.customer_id[m & has_customer])
            if len(seen):
                grow = int(seen.max()) + 1 - len(month.customers)
                if grow > 0:
                    month.customers = np.concatenate([month.customers, np.zeros(grow, bool)])
                month.customers[seen] = True
            _add(month.revenue, rows.cents, m & amount)
            _add(month.items, rows.quantity, m & ~rows.quantity_null)
            # SUM(CASE WHEN status = 'DELIVERED' THEN amount ELSE 0 END): NULL only for a
            # delivered order without an amount (every other row adds a value, maybe 0).
            _add(month.delivered, np.where(delivered, rows.cents, 0), m & ~(delivered & ~amount))
            _add(month.high, np.where(high, rows.cents, 0), m)
            # A NULL amount is 'Low Value', and adds NULL to the low sum.
            _add(month.low, np.where(high, 0, rows.cents), m & (high | amount))
            month.high_count += int(np.count_nonzero(m & high))

    def result(self) -> dict[tuple[int | None, int | None], dict[str, Any]]:
        """orders_aggregated as the recomputation says, by (year, month)."""
        out: dict[tuple[int | None, int | None], dict[str, Any]] = {}
        for key, m in self._months.items():
            ym = (None, None) if key == NULL_MONTH else (1970 + key // 12, key % 12 + 1)
            amounts = m.revenue[1]
            out[ym] = {
                "total_orders": m.ids,
                "total_revenue": _money(m.revenue),
                "average_order_value": Decimal(m.revenue[0]) / 100 / amounts if amounts else None,
                "unique_customers": int(np.count_nonzero(m.customers)),
                "total_items_sold": m.items[0] if m.items[1] else None,
                "total_delivered_revenue": _money(m.delivered),
                "total_high_value_orders": _money(m.high),
                "total_low_value_orders": _money(m.low),
                "high_value_order_count": m.high_count,
                "low_value_order_count": m.rows - m.high_count,
            }
        return out


def first_of_pair(rows: Rows, keys: np.ndarray | None = None) -> np.ndarray:
    """For rows sorted by order_id: True where the (order_id, month) pair has not been seen
    earlier in the batch (a repeated order_id counts once per month, as COUNT(DISTINCT))."""
    ids = rows.order_id
    n = len(ids)
    first = np.ones(n, bool)
    if n < 2:
        return first
    repeat = np.zeros(n, bool)
    repeat[1:] = ids[1:] == ids[:-1]
    if not repeat.any():
        return first
    keys = rows.months() if keys is None else keys
    seen: set[tuple[Any, int]] = set()
    for i in np.flatnonzero(repeat | np.roll(repeat, -1)).tolist():
        pair = (ids[i], int(keys[i]))
        first[i] = pair not in seen
        seen.add(pair)
    return first
