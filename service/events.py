"""The change event, the operation, a batch, and the net effect of a batch.

Values in flight are plain ints and strings (money in integer cents, times in
epoch seconds): they are cheap to make a million of a second, exact, and each
sink turns them into its own column types at the edge.
"""

from __future__ import annotations

import enum
import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple


class Op(enum.IntEnum):
    INSERT = 1
    UPDATE = 2
    DELETE = 3


class Status(enum.StrEnum):
    PENDING = "PENDING"
    PROCESSING = "PROCESSING"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"
    RETURNED = "RETURNED"


#: The order lifecycle: every status an update may move an order to.
TRANSITIONS: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.PROCESSING, Status.CANCELLED}),
    Status.PROCESSING: frozenset({Status.SHIPPED, Status.CANCELLED}),
    Status.SHIPPED: frozenset({Status.DELIVERED}),
    Status.DELIVERED: frozenset({Status.RETURNED}),
    Status.CANCELLED: frozenset(),
    Status.RETURNED: frozenset(),
}

#: Columns of ``raw_orders``, in table order (the seed's names).
COLUMNS = (
    "order_id",
    "customer_id",
    "order_date",
    "status",
    "amount",
    "product_id",
    "quantity",
)


class Event(NamedTuple):
    """One change to one order. Deletes carry only ``seq``, ``op`` and ``order_id``."""

    seq: int
    op: Op
    order_id: str
    customer_id: str | None = None
    order_ts: int | None = None  # epoch seconds, UTC
    status: str | None = None
    amount_cents: int | None = None
    product_id: str | None = None
    quantity: int | None = None

    def row(self) -> Row:
        """The after-image as a ``raw_orders`` row."""
        return Row(
            self.order_id,
            self.customer_id,  # type: ignore[arg-type]
            self.order_ts,  # type: ignore[arg-type]
            self.status,  # type: ignore[arg-type]
            self.amount_cents,  # type: ignore[arg-type]
            self.product_id,  # type: ignore[arg-type]
            self.quantity,  # type: ignore[arg-type]
        )


class Row(NamedTuple):
    """A ``raw_orders`` row as it travels: cents and epoch seconds."""

    order_id: str
    customer_id: str
    order_ts: int
    status: str
    amount_cents: int
    product_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class Batch:
    """The net effect of a run of events of one worker, applied in one transaction.

    ``checkpoints`` maps each partition in the batch to the last sequence
    number it holds; it is written in the same transaction as the rows.
    """

    worker: int
    inserts: Sequence[Event]
    updates: Sequence[Event]
    deletes: Sequence[str]
    checkpoints: dict[int, int]
    counts: dict[Op, int]

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    @property
    def last_seq(self) -> int:
        return max(self.checkpoints.values())


_INSERT, _UPDATE, _DELETE = Op.INSERT, Op.UPDATE, Op.DELETE
_op_of = operator.itemgetter(1)
_seq_of = operator.itemgetter(0)


def net_effect(worker: int, events: Sequence[Event], partitions: Iterable[int]) -> Batch:
    """Collapse the changes to each order into one.

    insert+update -> insert of the final image; insert+...+delete -> nothing;
    update+update -> update of the final image; update+delete -> delete.
    ``events`` are in sequence order; ``partitions`` runs beside them.
    """
    # Order ids are never reused and an order's insert is its first change, so
    # "existed before this batch" is "has no insert in this batch".
    inserted = {ev[2] for ev in events if ev[1] is _INSERT}
    last = {ev[2]: ev for ev in events}  # the final image wins
    inserts: list[Event] = []
    updates: list[Event] = []
    deletes: list[str] = []
    for oid, ev in last.items():
        if ev[1] is _DELETE:
            if oid not in inserted:
                deletes.append(oid)
        elif oid in inserted:
            inserts.append(ev)
        else:
            updates.append(ev)
    ops = list(map(_op_of, events))
    counts = {
        Op.INSERT: ops.count(_INSERT),
        Op.UPDATE: ops.count(_UPDATE),
        Op.DELETE: ops.count(_DELETE),
    }
    # Events are in sequence order, so the last one seen per partition wins.
    checkpoints = dict(zip(partitions, map(_seq_of, events), strict=True))
    return Batch(worker, inserts, updates, deletes, checkpoints, counts)
