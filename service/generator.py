"""The order-lifecycle stream: pure, no asyncio, no clock, no I/O.

The stream is a function of ``(seed, start, GeneratorSettings, shard)`` alone,
and the first N events of a stream are the first N events of any longer one.
That is what makes resume, replay and verification cheap: any process can
regenerate exactly the events a target should hold.

Realism, within a bounded memory:

- a fixed product catalog (unit prices in cents), so ``amount = price x quantity``;
- customers drawn from a pool with a Zipf-like skew (repeat buyers);
- the lifecycle PENDING -> PROCESSING -> SHIPPED -> DELIVERED, CANCELLED before
  shipping, RETURNED after delivery; a PENDING order may change its quantity;
- deletes purge an order (test or fraud orders) at a small rate.

Orders that are still in flight live in a fixed-size ring (``active_orders``
slots). An order leaves it when it reaches a final state, is deleted, or is
pushed out by newer orders; it is never touched again after that. So memory is
bounded whatever the length of the run, and no event touches an order that
does not exist.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .events import Event, Op, Status

#: A plain 9-tuple as an Event, without a copy through ``Event.__new__``'s arguments.
as_event: Callable[[tuple[Any, ...]], Event] = functools.partial(tuple.__new__, Event)

#: Bump when a change would alter the stream for the same settings.
GENERATOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class GeneratorSettings:
    """What shapes the stream. Part of the stream's identity."""

    insert_ratio: float = 0.60
    update_ratio: float = 0.35
    delete_ratio: float = 0.05
    customers: int = 50_000
    customer_skew: float = 1.1
    products: int = 250
    active_orders: int = 20_000
    backdate_days: int = 90
    mean_gap_seconds: float = 0.5

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class StreamIdentity:
    """Everything the stream is a function of. Stored with the checkpoint."""

    seed: int
    start: int  # epoch seconds, UTC
    shard: str
    partitions: int
    generator: GeneratorSettings

    def as_dict(self) -> dict[str, object]:
        return {
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "start": self.start,
            "shard": self.shard,
            "partitions": self.partitions,
            "generator": self.generator.as_dict(),
        }

    @classmethod
    def from_json(cls, text: str) -> StreamIdentity:
        """The identity a target stored (``json.dumps(as_dict())``); refuses another generator version."""
        d = json.loads(text)
        if d.get("version") != GENERATOR_VERSION:
            raise ValueError(
                f"the stream was written by generator v{d.get('version')}; this build replays "
                f"v{GENERATOR_VERSION} only"
            )
        return cls(
            int(d["seed"]),
            int(d["start"]),
            str(d["shard"]),
            int(d["partitions"]),
            GeneratorSettings(**d["generator"]),
        )

    def describe(self) -> str:
        start = dt.datetime.fromtimestamp(self.start, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        return f"seed={self.seed} start={start} shard={self.shard!r}"


_QUANTITY_WEIGHTS = (55, 25, 10, 5, 3, 2)  # quantities 1..6
_PENDING = Status.PENDING.value
_PROCESSING = Status.PROCESSING.value
_SHIPPED = Status.SHIPPED.value
_DELIVERED = Status.DELIVERED.value
_CANCELLED = Status.CANCELLED.value
_RETURNED = Status.RETURNED.value
_INSERT, _UPDATE, _DELETE = Op.INSERT, Op.UPDATE, Op.DELETE
_DRAWS = 10  # uniforms per event: op, 3 slot probes, 2 for the update, 4 for the insert


class OrderStream:
    """Iterates the events of one stream, in sequence order, from seq 1.

    Every event consumes one row of ``_DRAWS`` uniforms from a PCG64 stream,
    whatever it turns out to be, so drawing them in blocks of any size gives
    the same stream: ``take(a) + take(b) == take(a + b)``. The draws that do
    not depend on the ring (customer, product, quantity, date) are turned
    into values a block at a time with numpy; only the ring walk is a loop.
    """

    def __init__(self, identity: StreamIdentity) -> None:
        g = identity.generator
        self.identity = identity
        key = zlib.crc32(f"{identity.seed}/{identity.shard}".encode())
        self._bits = np.random.Generator(np.random.PCG64([GENERATOR_VERSION, identity.seed, key]))
        # The catalog belongs to the generator, not to the seed: the same
        # product costs the same in every stream.
        catalog = np.random.Generator(np.random.PCG64(20260101))
        prices = np.round(catalog.lognormal(3.4, 0.9, g.products), 1) * 100 + 99
        self._prices = prices.astype(np.int64)
        self._product_ids = np.array([f"PROD-{i:04d}" for i in range(1, g.products + 1)], object)
        self._product_cum = np.cumsum(1.0 / np.arange(1, g.products + 1) ** 0.8)
        self._customer_cum = np.cumsum(1.0 / np.arange(1, g.customers + 1) ** g.customer_skew)
        self._customer_ids = np.array([f"CUST-{i:07d}" for i in range(1, g.customers + 1)], object)
        self._qty_cum = np.cumsum(np.array(_QUANTITY_WEIGHTS, float))
        # The ring of in-flight orders: [order_id, customer, ts, status, cents, product, qty, price]
        self._ring: list[list[Any] | None] = [None] * g.active_orders
        self._filled = 0
        self._next_slot = 0
        self._next_order = 1
        self._seq = 0
        #: Events produced so far, by operation.
        self.counts = {Op.INSERT: 0, Op.UPDATE: 0, Op.DELETE: 0}
        self._prefix = f"ORD-{identity.shard}-" if identity.shard else "ORD-"
        total = g.insert_ratio + g.update_ratio + g.delete_ratio
        self._p_insert = g.insert_ratio / total
        self._p_update = (g.insert_ratio + g.update_ratio) / total
        self._backdate = g.backdate_days * 86_400
        self._gap = g.mean_gap_seconds
        self._start = identity.start

    @property
    def seq(self) -> int:
        """Sequence number of the last event produced."""
        return self._seq

    def __iter__(self) -> Iterator[Event]:
        while True:
            yield from self.take(4096)

    def _inserts(self, u: np.ndarray) -> tuple[list[Any], ...]:
        """Customer, date, amount, product and quantity for every row, were it an insert."""
        n = len(u)
        cust = self._customer_ids[
            np.searchsorted(self._customer_cum, u[:, 6] * self._customer_cum[-1])
        ]
        prod = np.searchsorted(self._product_cum, u[:, 7] * self._product_cum[-1])
        qty = np.searchsorted(self._qty_cum, u[:, 8] * self._qty_cum[-1]) + 1
        seqs = np.arange(self._seq + 1, self._seq + n + 1, dtype=np.float64)
        ts = (self._start + seqs * self._gap - u[:, 9] * self._backdate).astype(np.int64)
        price = self._prices[prod]
        return (
            cust.tolist(),
            ts.tolist(),
            (price * qty).tolist(),
            self._product_ids[prod].tolist(),
            qty.tolist(),
            price.tolist(),
        )

    def take(self, n: int) -> list[Event]:
        """The next ``n`` events."""
        return list(map(as_event, self.take_tuples(n)))

    def take_tuples(self, n: int) -> list[tuple[Any, ...]]:
        """The next ``n`` events as plain tuples (``as_event`` makes them Events).

        One flat loop with everything in locals: this runs once per event,
        the hottest code in the service.
        """
        u = self._bits.random((n, _DRAWS))
        custs, tss, amounts, products, qtys, prices = self._inserts(u)
        op_u, p1, p2, p3, xs, ys = (u[:, i].tolist() for i in range(6))
        ring = self._ring
        size = len(ring)
        filled, next_slot, next_order = self._filled, self._next_slot, self._next_order
        seq, prefix = self._seq, self._prefix
        p_insert, p_update = self._p_insert, self._p_update
        out: list[tuple[Any, ...]] = []
        append = out.append
        n_ins = n_del = 0
        # One tuple unpack per event beats a dozen list subscripts.
        rows = zip(
            op_u, p1, p2, p3, xs, ys, custs, tss, amounts, products, qtys, prices, strict=True
        )
        for r, a1, a2, a3, x, y, cust, ts, amount, product, qty, price in rows:
            seq += 1
            o = None
            if r >= p_insert and filled:
                # An update or a delete: find an order still in flight.
                slot = int(a1 * filled)
                o = ring[slot]
                if o is None:
                    slot = int(a2 * filled)
                    o = ring[slot]
                    if o is None:
                        slot = int(a3 * filled)
                        o = ring[slot]
            if o is None:  # an insert
                order_id = prefix + str(next_order).zfill(10)  # ~2x faster than an f-string spec
                next_order += 1
                ring[next_slot] = [order_id, cust, ts, _PENDING, amount, product, qty, price]
                next_slot += 1
                if next_slot == size:
                    next_slot = 0
                if filled < size:
                    filled += 1
                n_ins += 1
                append((seq, _INSERT, order_id, cust, ts, _PENDING, amount, product, qty))
                continue
            if r >= p_update:  # a delete: a purged test or fraud order
                ring[slot] = None
                n_del += 1
                append((seq, _DELETE, o[0], None, None, None, None, None, None))
                continue
            status = o[3]
            if status is _PENDING:
                if x < 0.25:  # the customer changes the quantity
                    qty = int(y * 5) + 1
                    if qty == o[6]:
                        qty = qty % 5 + 1
                    o[6] = qty
                    o[4] = qty * o[7]
                elif x < 0.33:
                    o[3] = _CANCELLED
                else:
                    o[3] = _PROCESSING
            elif status is _PROCESSING:
                o[3] = _CANCELLED if x < 0.07 else _SHIPPED
            elif status is _SHIPPED:
                o[3] = _DELIVERED
            else:  # DELIVERED: only orders that will be returned are still in the ring
                o[3] = _RETURNED
            new = o[3]
            # Final states leave the ring; most deliveries are final too.
            if new is _CANCELLED or new is _RETURNED or (new is _DELIVERED and y < 0.9):
                ring[slot] = None
            append((seq, _UPDATE, o[0], o[1], o[2], new, o[4], o[5], o[6]))
        self._filled, self._next_slot, self._next_order, self._seq = (
            filled,
            next_slot,
            next_order,
            seq,
        )
        counts = self.counts
        counts[_INSERT] += n_ins
        counts[_DELETE] += n_del
        counts[_UPDATE] += n - n_ins - n_del
        return out


def replay(identity: StreamIdentity, events: int) -> dict[str, tuple[object, ...]]:
    """The state of ``raw_orders`` after the first ``events`` events, in memory."""
    state: dict[str, tuple[object, ...]] = {}
    stream = OrderStream(identity)
    done = 0
    while done < events:
        for ev in stream.take(min(65_536, events - done)):
            if ev.op is Op.DELETE:
                del state[ev.order_id]
            else:
                state[ev.order_id] = tuple(ev.row())
        done = stream.seq
    return state
