"""Check a target against its stream: the generator is pure, so the truth can be recomputed.

The target records which stream its shard holds (``cdc_streams.identity``) and,
per partition, the last sequence number it applied (``cdc_checkpoints``). An
event with sequence number s of partition p belongs in the target iff
s <= checkpoint[p]; replaying the stream that far, applying only those
events, gives exactly what ``raw_orders`` must hold for the shard.

In bounded memory, whatever the table's size: the replay hands out finished
orders in number order, a chunk at a time (:mod:`service.verify.expected`), and
each chunk is compared with the rows of ``raw_orders`` in its range of order
ids (:mod:`service.verify.shard_rows`: one query per id width, as text order is not
number order past ten digits). The other rows (other shards, ids of no width
the stream wrote) are read once, sorted.

Checks, each independent of the SQL under test:

- raw_orders equals that replay, row by row and column by column; on a
  mismatch the first order ids missing, unexpected and changed (with the columns);
- no order_id appears twice (the primary key is not enforced by Snowflake);
- every status is one of the lifecycle's;
- orders_aggregated, refreshed first, equals the monthly aggregate recomputed
  in Python (:mod:`service.verify.monthly`) from every row of raw_orders, metric by metric.

Run it on a quiet target: the reads are separate statements.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np

from .. import clock
from ..pipeline import checkpoint
from ..pipeline.events import ORDER_DIGITS, STATUSES, customer_id, order_prefix, product_id
from ..pipeline.generator import StreamIdentity
from ..sinks.base import SinkError, SqlSession, Warehouse
from ..warehouse import layers
from . import expected
from .monthly import Monthly, Rows, first_of_pair
from .shard_rows import read_others, read_span, spans, width

SHOW = 5  # differences listed per kind
_COLUMNS = ("order_id", "customer_id", "order_date", "status", "amount", "product_id", "quantity")
#: Sums of money: exact where the driver returns a decimal, within half a cent where a float.
MONEY = (
    "total_revenue",
    "total_delivered_revenue",
    "total_high_value_orders",
    "total_low_value_orders",
)
COUNTS = (
    "total_orders",
    "unique_customers",
    "total_items_sold",
    "high_value_order_count",
    "low_value_order_count",
)
AVERAGES = ("average_order_value",)
METRICS = (*COUNTS, *MONEY, *AVERAGES)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    differences: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Report:
    stream: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


# -- the expected rows, as the target writes them -----------------------------------------


class _Ids:
    """Text ids by index (customers, products), rendered once."""

    def __init__(self, render: Callable[[int], str]) -> None:
        self._render = render
        self._ids: np.ndarray = np.empty(0, object)

    def take(self, index: np.ndarray) -> np.ndarray:
        if len(index) and int(index.max()) >= len(self._ids):
            size = 1 << int(index.max()).bit_length()
            ids = np.empty(size, object)
            ids[:] = [self._render(i) for i in range(size)]
            self._ids = ids
        out: np.ndarray = self._ids[index]
        return out


_CUSTOMERS, _PRODUCTS = _Ids(customer_id), _Ids(product_id)
_STATUS_TEXT = np.array(STATUSES, object)


def render(chunk: expected.Chunk, prefix: str) -> Rows:
    """A chunk of the replay in the target's representation (text ids, status names)."""
    c = chunk.columns
    ids = np.empty(len(chunk), object)
    ids[:] = [prefix + str(n).zfill(ORDER_DIGITS) for n in chunk.order_no.tolist()]
    none = np.zeros(len(chunk), bool)
    return Rows(
        ids, _CUSTOMERS.take(c["customer"]), c["ts"], none, _STATUS_TEXT[c["status"]],
        c["cents"], none, _PRODUCTS.take(c["product"]), c["quantity"], none,
    )  # fmt: skip


# -- the checks, accumulated chunk by chunk -----------------------------------------------


def _show(row: tuple[Any, ...]) -> dict[str, Any]:
    d = dict(zip(_COLUMNS, row, strict=True))
    if row[2] is not None:
        d["order_date"] = clock.from_epoch(row[2]).isoformat()
    if row[4] is not None:
        d["amount"] = f"{Decimal(row[4]) / 100:.2f}"
    return d


def _differ(a: Rows, b: Rows) -> np.ndarray:
    """Per column, where aligned rows differ (rows x 6, order_id excluded)."""

    def ints(va: np.ndarray, na: np.ndarray, vb: np.ndarray, nb: np.ndarray) -> np.ndarray:
        out: np.ndarray = (na != nb) | (~na & (va != vb))
        return out

    return np.column_stack([
        a.customer_id != b.customer_id,
        ints(a.ts, a.ts_null, b.ts, b.ts_null),
        a.status != b.status,
        ints(a.cents, a.cents_null, b.cents, b.cents_null),
        a.product_id != b.product_id,
        ints(a.quantity, a.quantity_null, b.quantity, b.quantity_null),
    ])  # fmt: skip


def _repeats(ids: np.ndarray) -> np.ndarray:
    """For ids sorted so that equal ones are adjacent: True on every copy after the first."""
    out = np.zeros(len(ids), bool)
    if len(ids) > 1:
        out[1:] = ids[1:] == ids[:-1]
    return out


@dataclass(slots=True)
class _Tally:
    """Counts and first examples, summed over the chunks."""

    rows: int = 0  # the shard's rows in the target
    others: int = 0  # rows of other shards
    stream: int = 0  # rows of the replay
    chunks: int = 0
    missing: int = 0
    unexpected: int = 0
    changed: int = 0
    repeats: int = 0  # rows repeating an order_id (all rows)
    shard_repeats: int = 0
    bad_status: int = 0
    shown: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, text: str) -> None:
        seen = self.shown.setdefault(kind, [])
        if len(seen) < SHOW:
            seen.append(text)

    def statuses(self, rows: Rows) -> None:
        valid = np.zeros(len(rows), bool)
        for s in STATUSES:
            valid |= rows.status == s
        bad = np.flatnonzero(~valid)
        self.bad_status += len(bad)
        for i in bad[:SHOW].tolist():
            self.note("status", f"{rows.order_id[i]}: status {rows.status[i]!r}")

    def duplicates(self, rows: Rows) -> int:
        again = _repeats(rows.order_id)
        if again.any():
            ids = rows.order_id
            for i in np.flatnonzero(again & ~np.roll(again, -1)).tolist():
                n = 1
                while i - n >= 0 and ids[i - n] == ids[i]:
                    n += 1
                self.note("unique", f"{ids[i]} appears {n} times")
        k = int(np.count_nonzero(again))
        self.repeats += k
        return k

    def compare(self, want: Rows, got: Rows) -> None:
        """One range of order numbers: the replay's rows against the target's."""
        self.stream += len(want)
        self.rows += len(got)
        self.shard_repeats += self.duplicates(got)
        if len(want) == len(got) and bool(np.all(want.order_id == got.order_id)):
            w, g = np.arange(len(want)), np.arange(len(got))
        else:
            w, g = self._match(want, got)
        diff = _differ(got.take(g), want.take(w))
        for i in np.flatnonzero(diff.any(axis=1)).tolist():
            self.changed += 1
            if len(self.shown.get("changed", [])) < SHOW:
                a, b = _show(got.row(int(g[i]))), _show(want.row(int(w[i])))
                cols = ", ".join(f"{c} {a[c]!s} != {b[c]!s}" for c in _COLUMNS if a[c] != b[c])
                self.note("changed", f"changed {a['order_id']}: {cols} (target != stream)")

    def _match(self, want: Rows, got: Rows) -> tuple[np.ndarray, np.ndarray]:
        """Rows of both sides by order_id (the first of repeated ones); notes the rest."""
        where = {oid: i for i, oid in enumerate(want.order_id.tolist())}
        w: list[int] = []
        g: list[int] = []
        again = _repeats(got.order_id)
        for j, oid in enumerate(got.order_id.tolist()):
            if again[j]:
                continue
            i = where.pop(oid, None)
            if i is None:
                self.unexpected_row(oid)
            else:
                w.append(i)
                g.append(j)
        for i in sorted(where.values()):
            self.missing += 1
            self.note("missing", f"missing {want.order_id[i]} (the stream holds it)")
        return np.array(w, np.int64), np.array(g, np.int64)

    def unexpected_row(self, oid: Any) -> None:
        self.unexpected += 1
        self.note("unexpected", f"unexpected {oid} (not in the stream)")

    def stream_check(self) -> Check:
        name = "raw_orders = replay of the stream"
        others = f"; {self.others:,} rows of other shards" if self.others else ""
        if not (self.missing or self.unexpected or self.changed or self.shard_repeats):
            detail = f"{self.rows:,} rows, compared in {self.chunks:,} chunks{others}"
            return Check(name, True, detail)
        diffs = [d for k in ("missing", "unexpected", "changed") for d in self.shown.get(k, [])]
        if self.shard_repeats:
            diffs.append(f"{self.shard_repeats} rows repeat an order_id")
        detail = (
            f"{self.rows:,} rows, stream {self.stream:,}; {self.missing} missing, "
            f"{self.unexpected} unexpected, {self.changed} changed{others}"
        )
        return Check(name, False, detail, diffs)

    def unique_check(self) -> Check:
        total = self.rows + self.others
        if not self.repeats:
            return Check("order_id unique", True, f"{total:,} order ids")
        shown = sorted(self.shown.get("unique", []))
        return Check("order_id unique", False, f"{self.repeats} rows repeat an order_id", shown)

    def status_check(self) -> Check:
        if not self.bad_status:
            return Check("status valid", True, ", ".join(sorted(STATUSES)))
        detail = f"{self.bad_status} rows with a status outside the lifecycle"
        return Check("status valid", False, detail, self.shown.get("status", []))


# -- the aggregate ------------------------------------------------------------------------


def _differs(metric: str, got: Any, want: Any) -> bool:
    if got is None or want is None:
        return not (got is None and want is None)
    if metric in AVERAGES or isinstance(got, float):
        return abs(Decimal(str(got)) - Decimal(want)) >= Decimal("0.005")
    return Decimal(got) != Decimal(want)


def read_aggregated(session: SqlSession) -> dict[tuple[Any, Any], dict[str, Any]]:
    cur = session.execute("SELECT * FROM orders_aggregated")
    names = [d[0].lower() for d in cur.description]
    out = {}
    for row in cur.fetchall():
        d = dict(zip(names, row, strict=True))
        y, m = d.pop("order_year"), d.pop("order_month")
        out[(None if y is None else int(y), None if m is None else int(m))] = d
    return out


def compare_aggregates(
    table: dict[tuple[Any, Any], dict[str, Any]], want: dict[tuple[Any, Any], dict[str, Any]]
) -> Check:
    """orders_aggregated against the recomputation (:meth:`Monthly.result`)."""
    name = "orders_aggregated = recomputation"
    diffs: list[str] = []
    for key in sorted(set(want) | set(table), key=lambda k: (k[0] or 0, k[1] or 0)):
        month = f"{key[0]}-{key[1]:02d}" if key[0] is not None and key[1] is not None else str(key)
        if key not in table:
            diffs.append(f"{month}: missing from orders_aggregated")
            continue
        if key not in want:
            diffs.append(f"{month}: in orders_aggregated, but raw_orders has no order that month")
            continue
        for metric in METRICS:
            if metric not in table[key]:
                diffs.append(f"{month}: orders_aggregated has no column {metric}")
            elif _differs(metric, table[key][metric], want[key][metric]):
                diffs.append(
                    f"{month}: {metric} {table[key][metric]} != {want[key][metric]} (recomputed)"
                )
    if diffs:
        return Check(name, False, f"{len(diffs)} differences", diffs[:SHOW])
    return Check(name, True, f"{len(table)} months x {len(METRICS)} metrics")


# -- all of it --------------------------------------------------------------------------------


def load_stream(session: SqlSession, shard: str) -> tuple[StreamIdentity, dict[int, int]]:
    stored = checkpoint.load(session, shard)
    if stored.identity is None:
        raise SinkError(f"the target holds no stream for shard {shard!r}: nothing to verify")
    try:
        identity = StreamIdentity.from_json(stored.identity)
    except ValueError as exc:
        raise SinkError(str(exc)) from None
    return identity, stored.checkpoints


def compare(
    session: SqlSession, identity: StreamIdentity, checkpoints: dict[int, int], chunk_rows: int
) -> tuple[_Tally, Monthly]:
    """Every row of raw_orders, once: the shard's against the replay, chunk by chunk, then
    the rest; the statuses, the repeats and the monthly totals along the way."""
    prefix = order_prefix(identity.shard)
    tally, months = _Tally(), Monthly()
    widest = ORDER_DIGITS
    for chunk in expected.chunks(identity, checkpoints, chunk_rows):
        if len(chunk):
            widest = max(widest, width(int(chunk.order_no[-1])))
        found = [
            r for s in spans(prefix, chunk.low, chunk.high, widest) for r in read_span(session, s)
        ]
        got = Rows.from_tuples(found)
        tally.chunks += 1
        tally.compare(render(chunk, prefix), got)
        tally.statuses(got)
        months.add(got, first_of_pair(got))
    for rows in read_others(session, prefix, widest, chunk_rows):
        mine = np.array([str(oid).startswith(prefix) for oid in rows.order_id.tolist()], bool)
        for i in np.flatnonzero(mine & ~_repeats(rows.order_id)).tolist():
            tally.unexpected_row(rows.order_id[i])
        tally.rows += int(np.count_nonzero(mine))
        tally.others += int(np.count_nonzero(~mine))
        tally.shard_repeats += int(np.count_nonzero(mine & _repeats(rows.order_id)))
        tally.duplicates(rows)
        tally.statuses(rows)
        months.add(rows, first_of_pair(rows))
    return tally, months


#: DuckDB's memory limit while ``verify`` reads a file of its own (``CDC_DUCKDB_MEMORY_MB`` wins).
READ_MEMORY_MB = 32


def verify(
    session: SqlSession,
    warehouse: Warehouse,
    shard: str,
    refresh: bool = True,
    chunk_rows: int = expected.CHUNK_ROWS,
    read_memory_mb: int | None = None,
) -> Report:
    """Every check, on one session. ``refresh`` first brings orders_aggregated up to date;
    ``chunk_rows`` is about how many rows are held at a time; ``read_memory_mb``, on a
    DuckDB file of the command's own, lowers DuckDB's limit for the reads that follow."""
    if refresh:
        layers.refresh(session, warehouse)
    if read_memory_mb and session.dialect == "duckdb":
        # Each block is read once: a buffer pool as large as the service's only holds
        # RSS that grows with the table (measured 1.12x at 10M vs 1M events; 1.06x so).
        session.execute(f"SET memory_limit = '{int(read_memory_mb)}MB'")
    identity, checkpoints = load_stream(session, shard)
    table = read_aggregated(session)
    tally, months = compare(session, identity, checkpoints, chunk_rows)
    stream = (
        f"{identity.describe()} partitions={identity.partitions}, applied up to seq "
        f"{max(checkpoints.values(), default=0):,}"
    )
    return Report(
        stream,
        [
            tally.stream_check(),
            tally.unique_check(),
            tally.status_check(),
            compare_aggregates(table, months.result()),
        ],
    )
