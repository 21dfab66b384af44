"""The change event, the operation, a batch, and the net effect of a batch.

Events travel in columns (:class:`Changes`): numpy arrays of plain integers
(money in cents, times in epoch seconds, ids as numbers), cheap to make a
million of a second and exact. Each sink turns them into its own column types
at the edge; :class:`Event` is one row, for row-wise code and for tests.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


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


#: Status codes in a column: the index into this tuple.
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)
_STATUS_CODE = {name: i for i, name in enumerate(STATUSES)}
_OPS = (None, Op.INSERT, Op.UPDATE, Op.DELETE)
_INSERT, _UPDATE, _DELETE = Op.INSERT, Op.UPDATE, Op.DELETE

#: Widths of the zero-padded numbers in the ids (a wider number is written in full).
ORDER_DIGITS, CUSTOMER_DIGITS, PRODUCT_DIGITS = 10, 7, 4


def order_prefix(shard: str) -> str:
    """``ORD-<shard>-``: order ids are unique across replicas."""
    return f"ORD-{shard}-"


def order_id(prefix: str, number: int) -> str:
    return prefix + str(number).zfill(ORDER_DIGITS)


def id_number(text_id: str) -> int:
    """The number an id (order, customer, product) ends with."""
    return int(text_id.rsplit("-", 1)[1])


def customer_id(index: int) -> str:
    return "CUST-" + str(index + 1).zfill(CUSTOMER_DIGITS)


def product_id(index: int) -> str:
    return "PROD-" + str(index + 1).zfill(PRODUCT_DIGITS)


_COLUMN_NAMES = (
    "seq", "op", "order_no", "customer", "ts", "status", "cents", "product", "quantity",
    "was_status", "was_quantity",
)  # fmt: skip
_SMALL = ("op", "status", "was_status")  # int8 columns


class Changes:
    """A run of change events, column by column (numpy arrays of one length).

    This is how events travel from the generator to a sink: a million events
    a second cannot each be a Python object. Ids are numbers here (the order
    number, the customer and product index) and become strings only at the
    edge, where a sink writes them (``events`` for row-wise consumers, SQL
    for DuckDB). A delete's image columns hold the deleted row's last image.
    ``was_status`` and ``was_quantity`` are the order's status and quantity before
    the event (an update's previous image differs from its new one in those alone;
    for an insert or a delete they equal the image): what a change event's
    ``before`` is made of.
    """

    __slots__ = ("prefix", *_COLUMN_NAMES)

    def __init__(self, prefix: str, *columns: np.ndarray) -> None:
        self.prefix = prefix
        if len(columns) == 9:  # no previous image given: the image itself
            columns = (*columns, columns[5], columns[8])
        (
            self.seq, self.op, self.order_no, self.customer, self.ts,
            self.status, self.cents, self.product, self.quantity,
            self.was_status, self.was_quantity,
        ) = columns  # fmt: skip

    seq: np.ndarray  # int64
    op: np.ndarray  # int8, Op values
    order_no: np.ndarray  # int64
    customer: np.ndarray  # int64, 0-based index
    ts: np.ndarray  # int64, epoch seconds
    status: np.ndarray  # int8, index into STATUSES
    cents: np.ndarray  # int64
    product: np.ndarray  # int64, 0-based index
    quantity: np.ndarray  # int64
    was_status: np.ndarray  # int8, the status before the event
    was_quantity: np.ndarray  # int64, the quantity before the event

    def columns(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self, name) for name in _COLUMN_NAMES)

    def __len__(self) -> int:
        return len(self.seq)

    def take(self, index: np.ndarray | slice) -> Changes:
        """The rows at ``index`` (an index array, a mask, or a slice)."""
        return Changes(self.prefix, *(c[index] for c in self.columns()))

    @classmethod
    def concat(cls, parts: Sequence[Changes]) -> Changes:
        if len(parts) == 1:
            return parts[0]
        cols = zip(*(p.columns() for p in parts), strict=True)
        return cls(parts[0].prefix, *(np.concatenate(c) for c in cols))

    @classmethod
    def empty(cls, prefix: str) -> Changes:
        return cls(prefix, *(np.empty(0, np.int8 if n in _SMALL else np.int64)
                             for n in _COLUMN_NAMES))  # fmt: skip

    def counts(self) -> dict[Op, int]:
        n = np.bincount(self.op, minlength=4).tolist()
        return {_INSERT: n[1], _UPDATE: n[2], _DELETE: n[3]}

    def events(self) -> list[Event]:
        """The rows as Events (deletes carry only seq, op and order_id)."""
        prefix = self.prefix
        out: list[Event] = []
        append = out.append
        rows = zip(*(c.tolist() for c in self.columns()), strict=True)
        for seq, op, no, cust, ts, status, cents, prod, qty, _, _ in rows:
            oid = order_id(prefix, no)
            if op == 3:
                append(Event(seq, _DELETE, oid))
            else:
                append(
                    Event(
                        seq, _OPS[op], oid, customer_id(cust), ts,  # type: ignore[arg-type]
                        STATUSES[status], cents, product_id(prod), qty,
                    )
                )  # fmt: skip
        return out

    @classmethod
    def from_events(cls, events: Sequence[Event]) -> Changes:
        """Events (whose ids are in the generator's formats) as columns."""
        if not events:
            return cls.empty("ORD-0-")
        prefix = events[0].order_id.rsplit("-", 1)[0] + "-"
        cols: list[list[int]] = [[] for _ in _COLUMN_NAMES[:9]]
        for e in events:
            image = (
                (0, 0, 0, 0, 0, 0)
                if e.op is _DELETE
                else (
                    id_number(e.customer_id or "-0") - 1,
                    e.order_ts,
                    _STATUS_CODE[e.status or ""],
                    e.amount_cents,
                    id_number(e.product_id or "-0") - 1,
                    e.quantity,
                )
            )
            for col, v in zip(cols, (e.seq, int(e.op), id_number(e.order_id), *image), strict=True):
                col.append(v)  # type: ignore[arg-type]
        return cls(prefix, *(
            np.array(c, np.int8 if n in _SMALL else np.int64)
            for n, c in zip(_COLUMN_NAMES[:9], cols, strict=True)
        ))  # fmt: skip


class Batch:
    """The net effect of a run of events of one worker, applied in one transaction.

    ``rows`` holds one row per order the batch touches, with what to do to it
    (``op``: insert a new row, update an existing one to this image, delete
    it), in order-number order. ``checkpoints`` maps each partition in the
    batch to the last sequence number it holds; it is written in the same
    transaction as the rows. ``counts`` are the events before collapsing.
    """

    __slots__ = (
        "_events_of",
        "_rows_of",
        "changes",
        "checkpoints",
        "counts",
        "partitions",
        "rows",
        "worker",
    )

    def __init__(
        self,
        worker: int,
        rows: Changes,
        checkpoints: dict[int, int],
        counts: dict[Op, int],
        changes: Changes | None = None,
        partitions: np.ndarray | None = None,
    ) -> None:
        self.worker = worker
        #: Every event of the batch, in sequence order, before collapsing, and the partition
        #: of each (a sink that writes each change, not the net effect: kafka).
        self.changes = changes if changes is not None else rows
        self.partitions = partitions
        self.rows = rows
        self.checkpoints = checkpoints
        self.counts = counts
        self._rows_of: dict[Op, Changes] = {}
        self._events_of: dict[Op, list[Event]] = {}

    def of(self, op: Op) -> Changes:
        """The rows to insert, update or delete."""
        part = self._rows_of.get(op)
        if part is None:
            part = self._rows_of[op] = self.rows.take(self.rows.op == op)
        return part

    def _events(self, op: Op) -> list[Event]:
        events = self._events_of.get(op)
        if events is None:
            events = self._events_of[op] = self.of(op).events()
        return events

    @property
    def inserts(self) -> list[Event]:
        """Rows to insert, as Events (for row-wise sinks; built once)."""
        return self._events(_INSERT)

    @property
    def updates(self) -> list[Event]:
        return self._events(_UPDATE)

    @property
    def deletes(self) -> list[str]:
        """Order ids to delete."""
        d = self.of(_DELETE)
        return [order_id(d.prefix, n) for n in d.order_no.tolist()]

    def sizes(self) -> dict[Op, int]:
        """Rows per operation after collapsing."""
        return self.rows.counts()

    @property
    def size(self) -> int:
        """Events in the batch, before collapsing."""
        return sum(self.counts.values())

    @property
    def last_seq(self) -> int:
        return max(self.checkpoints.values())


#: A run of one worker's events and the partition of each (router -> queue -> batcher).
Chunk = tuple[Changes, np.ndarray]
