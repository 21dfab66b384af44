"""Check a target against its stream: the generator is pure, so the truth can be recomputed.

The target records which stream its shard holds (``cdc_streams.identity``) and,
per partition, the last sequence number it applied (``cdc_checkpoints``). An
event with sequence number s of partition p belongs in the target iff
s <= checkpoint[p]; replaying the stream that far, applying only those
events, gives exactly what ``raw_orders`` must hold for the shard.

Checks, each independent of the SQL under test:

- raw_orders equals that replay: row count, an order-independent checksum
  (a sum of row hashes, so a duplicated row cannot cancel out as with XOR),
  and on a mismatch the first order ids that differ;
- no order_id appears twice (the primary key is not enforced by Snowflake);
- every status is one of the lifecycle's;
- orders_aggregated, refreshed first, equals the monthly aggregate recomputed
  in Python from the rows of raw_orders, metric by metric.

Run it on a quiet target: on Snowflake the reads are separate statements.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from . import checkpoint, clock
from . import warehouse as layers
from .events import Status, order_prefix
from .generator import StreamIdentity, replay
from .sinks.base import SinkError, SqlSession, Warehouse

#: order_id, customer_id, order_ts (epoch s), status, amount (cents), product_id, quantity
Canon = tuple[Any, ...]
SHOW = 5  # differences listed per kind
_STATUSES = frozenset(s.value for s in Status)
_ROWS_SQL = (
    "SELECT order_id, customer_id, order_date, status, amount, product_id, quantity FROM raw_orders"
)
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


# -- canonical rows -----------------------------------------------------------------


def _cents(amount: Any) -> int | None:
    if amount is None:
        return None
    if isinstance(amount, float):
        return round(amount * 100)
    return int(Decimal(amount) * 100)


def canonical(row: Sequence[Any]) -> Canon:
    """A ``raw_orders`` row as the stream carries it: epoch seconds and integer cents."""
    oid, cust, date, status, amount, product, qty = row
    ts = None if date is None else clock.to_epoch(date)
    return (oid, cust, ts, status, _cents(amount), product, None if qty is None else int(qty))


def row_hash(row: Canon) -> int:
    return int.from_bytes(hashlib.blake2b(repr(tuple(row)).encode(), digest_size=8).digest(), "big")


def checksum(rows: Iterable[Canon]) -> int:
    """Order-independent: the sum of the rows' hashes, mod 2**64."""
    return sum(row_hash(r) for r in rows) % (1 << 64)


def _show(row: Canon) -> dict[str, Any]:
    d = dict(zip(_COLUMNS, row, strict=True))
    if row[2] is not None:
        d["order_date"] = clock.from_epoch(row[2]).isoformat()
    if row[4] is not None:
        d["amount"] = f"{Decimal(row[4]) / 100:.2f}"
    return d


def compare_stream(expected: Mapping[str, Canon], rows: list[Canon]) -> Check:
    """raw_orders (the shard's rows) against the replay."""
    want, got = checksum(expected.values()), checksum(rows)
    detail = f"{len(rows):,} rows, checksum {got:016x}"
    if len(rows) == len(expected) and want == got:
        return Check("raw_orders = replay of the stream", True, detail)
    actual = {r[0]: r for r in rows}
    diffs: list[str] = []
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    changed = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    diffs += [f"missing {k} (the stream holds it)" for k in missing[:SHOW]]
    diffs += [f"unexpected {k} (not in the stream)" for k in extra[:SHOW]]
    for k in changed[:SHOW]:
        a, b = _show(actual[k]), _show(expected[k])
        cols = ", ".join(f"{c} {a[c]!s} != {b[c]!s}" for c in _COLUMNS if a[c] != b[c])
        diffs.append(f"changed {k}: {cols} (target != stream)")
    if len(rows) != len(actual):
        diffs.append(f"{len(rows) - len(actual)} rows repeat an order_id")
    detail = (
        f"{len(rows):,} rows, stream {len(expected):,}; checksum {got:016x}, stream {want:016x}; "
        f"{len(missing)} missing, {len(extra)} unexpected, {len(changed)} changed"
    )
    return Check("raw_orders = replay of the stream", False, detail, diffs)


def check_unique(rows: list[Canon]) -> Check:
    counts = Counter(r[0] for r in rows)
    dups = sorted(k for k, n in counts.items() if n > 1)
    if not dups:
        return Check("order_id unique", True, f"{len(counts):,} order ids")
    return Check(
        "order_id unique",
        False,
        f"{len(dups)} order ids appear more than once",
        [f"{k} appears {counts[k]} times" for k in dups[:SHOW]],
    )


def check_statuses(rows: list[Canon]) -> Check:
    bad = sorted((r[0], r[3]) for r in rows if r[3] not in _STATUSES)
    if not bad:
        return Check("status valid", True, ", ".join(sorted(_STATUSES)))
    return Check(
        "status valid",
        False,
        f"{len(bad)} rows with a status outside the lifecycle",
        [f"{k}: status {s!r}" for k, s in bad[:SHOW]],
    )


# -- the aggregate ------------------------------------------------------------------------


def _high(r: Canon) -> bool:
    """order_value_category = 'High Value': amount > 100 (a NULL amount is 'Low Value')."""
    return r[4] is not None and r[4] > 10_000


def _sum_case(rs: list[Canon], cond: Any) -> Decimal | None:
    """SUM(CASE WHEN cond THEN amount ELSE 0 END): NULLs skipped, all NULL gives NULL."""
    vals = [v for v in ((r[4] if cond(r) else 0) for r in rs) if v is not None]
    return Decimal(sum(vals)) / 100 if vals else None


def recompute(rows: Iterable[Canon]) -> dict[tuple[int | None, int | None], dict[str, Any]]:
    """orders_aggregated, computed in Python with SQL's NULL rules (money as exact Decimals)."""
    groups: dict[tuple[int | None, int | None], list[Canon]] = defaultdict(list)
    for r in rows:
        d = None if r[2] is None else clock.from_epoch(r[2])
        groups[(d.year, d.month) if d else (None, None)].append(r)
    out = {}
    for key, rs in groups.items():
        amounts = [r[4] for r in rs if r[4] is not None]
        qtys = [r[6] for r in rs if r[6] is not None]
        high = sum(1 for r in rs if _high(r))
        out[key] = {
            "total_orders": len({r[0] for r in rs if r[0] is not None}),
            "total_revenue": _sum_case(rs, lambda r: True),
            "average_order_value": Decimal(sum(amounts)) / 100 / len(amounts) if amounts else None,
            "unique_customers": len({r[1] for r in rs if r[1] is not None}),
            "total_items_sold": sum(qtys) if qtys else None,
            "total_delivered_revenue": _sum_case(rs, lambda r: r[3] == Status.DELIVERED),
            "total_high_value_orders": _sum_case(rs, _high),
            "total_low_value_orders": _sum_case(rs, lambda r: not _high(r)),
            "high_value_order_count": high,
            "low_value_order_count": len(rs) - high,
        }
    return out


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


def compare_aggregates(table: dict[tuple[Any, Any], dict[str, Any]], rows: list[Canon]) -> Check:
    want = recompute(rows)
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


def verify(session: SqlSession, warehouse: Warehouse, shard: str, refresh: bool = True) -> Report:
    """Every check, on one session. ``refresh`` first brings orders_aggregated up to date."""
    if refresh:
        layers.refresh(session, warehouse)
    identity, checkpoints = load_stream(session, shard)
    rows = [canonical(r) for r in session.execute(_ROWS_SQL).fetchall()]
    table = read_aggregated(session)
    prefix = order_prefix(shard)
    mine = [r for r in rows if str(r[0]).startswith(prefix)]
    expected = replay(identity, checkpoints)
    stream = (
        f"{identity.describe()} partitions={identity.partitions}, applied up to seq "
        f"{max(checkpoints.values(), default=0):,}"
    )
    return Report(
        stream,
        [
            compare_stream(expected, mine),
            check_unique(rows),
            check_statuses(rows),
            compare_aggregates(table, rows),
        ],
    )
