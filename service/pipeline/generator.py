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
import hashlib
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .events import STATUSES, Changes, Event, Op, Row, Status, order_prefix
from .router import checkpoint_array, partitions_of
from .simclock import Clock
from .traffic import Profile

#: Bump when a change would alter the stream for the same settings.
GENERATOR_VERSION = 2


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
    #: The traffic profile (None: ``steady``, which the identity does not mention, so a
    #: stream from before profiles existed keeps its identity byte for byte).
    traffic: Profile | None = None

    def as_dict(self) -> dict[str, object]:
        d: dict[str, object] = {
            "version": GENERATOR_VERSION,
            "seed": self.seed,
            "start": self.start,
            "shard": self.shard,
            "partitions": self.partitions,
            "generator": self.generator.as_dict(),
        }
        if self.traffic is not None:
            d["traffic"] = self.traffic.as_dict()
        return d

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
            None if d.get("traffic") is None else Profile.from_dict(d["traffic"]),
        )

    def describe(self) -> str:
        start = dt.datetime.fromtimestamp(self.start, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
        text = f"seed={self.seed} start={start} shard={self.shard!r}"
        return text if self.traffic is None else f"{text} traffic={self.traffic.name}"

    def clock(self) -> Clock:
        """The stream's simulated clock (when each event happens, and the mix then)."""
        g = self.generator
        ratios = (g.insert_ratio, g.update_ratio, g.delete_ratio)
        return Clock(self.start, g.mean_gap_seconds, self.traffic, ratios)

    def digest(self) -> str:
        """A short, stable name of the identity (it includes the generator's version)."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:32]


_QUANTITY_WEIGHTS = (55, 25, 10, 5, 3, 2)  # quantities 1..6
_PENDING, _PROCESSING, _SHIPPED, _DELIVERED, _CANCELLED, _RETURNED = (
    STATUSES.index(s) for s in Status
)
_INSERT, _UPDATE, _DELETE = Op.INSERT, Op.UPDATE, Op.DELETE
#: Events per block: the unit the stream is drawn in (part of the generator's version).
BLOCK = 1024
_DRAWS = 7  # uniforms per event: op, 2 for an update, 4 for an insert


class OrderStream:
    """The events of one stream, in sequence order, from seq 1.

    The stream is drawn a block of ``BLOCK`` events at a time, column-wise
    with numpy, and handed out in any sizes: blocks are cut at fixed
    positions, so ``take(a) + take(b) == take(a + b)``. Within a block each
    non-insert event picks a different order from those in flight when the
    block began (an order changes at most once per block, about 8 minutes of
    simulated time), so the block has no order-by-order dependence and needs
    no Python loop; orders inserted in a block join the ring at its end.
    """

    def __init__(self, identity: StreamIdentity) -> None:
        g = identity.generator
        self.identity = identity
        key = zlib.crc32(f"{identity.seed}/{identity.shard}".encode())
        self._rng = np.random.Generator(np.random.PCG64([GENERATOR_VERSION, identity.seed, key]))
        # The catalog belongs to the generator, not to the seed: the same
        # product costs the same in every stream.
        catalog = np.random.Generator(np.random.PCG64(20260101))
        prices = np.round(catalog.lognormal(3.4, 0.9, g.products), 1) * 100 + 99
        self._prices = prices.astype(np.int64)
        self._product_cum = np.cumsum(1.0 / np.arange(1, g.products + 1) ** 0.8)
        self._customer_cum = np.cumsum(1.0 / np.arange(1, g.customers + 1) ** g.customer_skew)
        self._qty_cum = np.cumsum(np.array(_QUANTITY_WEIGHTS, float))
        # The ring of in-flight orders, a column per attribute; order number 0 = a free slot.
        size = g.active_orders
        self._no = np.zeros(size, np.int64)
        self._cust = np.zeros(size, np.int64)
        self._ts = np.zeros(size, np.int64)
        self._status = np.zeros(size, np.int8)
        self._prod = np.zeros(size, np.int64)
        self._qty = np.zeros(size, np.int64)
        self._next_slot = 0
        self._next_order = 1
        self._drawn = 0  # seq of the last event drawn
        self._block: Changes | None = None
        self._pos = 0  # events of the current block handed out
        self._seq = 0
        #: Events produced so far, by operation.
        self.counts = {Op.INSERT: 0, Op.UPDATE: 0, Op.DELETE: 0}
        self.prefix = order_prefix(identity.shard)
        total = g.insert_ratio + g.update_ratio + g.delete_ratio
        self._p_insert = g.insert_ratio / total
        self._p_update = (g.insert_ratio + g.update_ratio) / total
        self._backdate = g.backdate_days * 86_400
        self._gap = g.mean_gap_seconds
        self._start = identity.start
        #: When each event happens (simulated), and under a profile the mix at that moment.
        self.clock = identity.clock()

    @property
    def seq(self) -> int:
        """Sequence number of the last event produced."""
        return self._seq

    def settled_below(self) -> int:
        """Orders numbered below this get no more events: each has left the ring (final,
        deleted or pushed out) and has no event left in the block being handed out.

        Read-only. What lets a replay hand out finished orders in number order,
        keeping only the orders still in flight (see :mod:`service.verify.expected`).
        """
        live = self._no[self._no > 0]
        low = int(live.min()) if len(live) else self._next_order
        block = self._block
        if block is not None and self._pos < len(block):
            low = min(low, int(block.order_no[self._pos :].min()))
        return low

    @property
    def at_block_boundary(self) -> bool:
        """Every event drawn has been handed out: the whole state is in the ring and the RNG."""
        return self._seq == self._drawn

    def capture(self) -> Snapshot:
        """A copy of the stream's state (about 1 MB of arrays, copied in well under 1 ms), to be
        encoded elsewhere. Only at a block boundary: a block half handed out is not state
        a snapshot keeps."""
        if not self.at_block_boundary:
            raise SnapshotError(
                f"seq {self._seq} is inside a block (drawn to {self._drawn}): no snapshot there"
            )
        return Snapshot(
            identity=self.identity.digest(),
            drawn=self._drawn,
            next_slot=self._next_slot,
            next_order=self._next_order,
            counts=(self.counts[Op.INSERT], self.counts[Op.UPDATE], self.counts[Op.DELETE]),
            rng=json.dumps(self._rng.bit_generator.state, sort_keys=True),
            ring=tuple(getattr(self, f"_{name}").copy() for name in _RING),
        )

    def snapshot(self) -> bytes:
        """The stream's state as bytes (:meth:`from_snapshot` continues from it)."""
        return self.capture().encode()

    @classmethod
    def from_snapshot(cls, identity: StreamIdentity, blob: bytes) -> OrderStream:
        """The stream of ``identity`` continued from a snapshot: the events it hands out are
        exactly those a fresh stream hands out after ``snapshot.drawn`` events. Raises
        :class:`SnapshotError` for a blob of another identity or generator version."""
        snap = Snapshot.decode(blob)
        if snap.identity != identity.digest():
            raise SnapshotError("the snapshot is of another stream (identity digest differs)")
        stream = cls(identity)
        size = identity.generator.active_orders
        for name, saved in zip(_RING, snap.ring, strict=True):
            ring = getattr(stream, f"_{name}")
            if saved.shape != (size,) or saved.dtype != ring.dtype:
                raise SnapshotError(f"the snapshot's ring {name} has another shape or type")
            ring[:] = saved
        stream._rng.bit_generator.state = json.loads(snap.rng)
        stream._next_slot, stream._next_order = snap.next_slot, snap.next_order
        stream._drawn = stream._seq = snap.drawn
        stream.counts = dict(zip((Op.INSERT, Op.UPDATE, Op.DELETE), snap.counts, strict=True))
        return stream

    def take(self, n: int) -> list[Event]:
        """The next ``n`` events, as Events."""
        return self.take_changes(n).events()

    def take_changes(self, n: int) -> Changes:
        """The next ``n`` events, as columns."""
        parts: list[Changes] = []
        while n > 0:
            block = self._block
            if block is None or self._pos == len(block):
                block = self._block = self._draw()
                self._pos = 0
            k = min(n, len(block) - self._pos)
            parts.append(block.take(slice(self._pos, self._pos + k)))
            self._pos += k
            n -= k
        if not parts:
            return Changes.empty(self.prefix)
        out = Changes.concat(parts)
        self._seq = int(out.seq[-1])
        for op, k in out.counts().items():
            self.counts[op] += k
        return out

    def _draw(self) -> Changes:
        """The next block of events; updates the ring."""
        k = BLOCK
        u = self._rng.random((k, _DRAWS))
        seq = np.arange(self._drawn + 1, self._drawn + k + 1, dtype=np.int64)
        self._drawn += k
        op = np.full(k, _INSERT, np.int8)
        no, cust, ts = np.zeros(k, np.int64), np.zeros(k, np.int64), np.zeros(k, np.int64)
        status, prod, qty = np.zeros(k, np.int8), np.zeros(k, np.int64), np.zeros(k, np.int64)
        was_status, was_qty = np.zeros(k, np.int8), np.zeros(k, np.int64)

        # Updates and deletes: each picks a different order in flight. While
        # the ring holds fewer orders than the block wants, the rest are inserts.
        occupied = np.flatnonzero(self._no)
        when: np.ndarray | None = None
        p_insert: np.ndarray | float = self._p_insert
        p_update: np.ndarray | float = self._p_update
        if self.clock.shaped:  # the profile's mix at each event's moment
            when = self.clock.times(seq)
            p_insert, p_update = self.clock.thresholds(when)
        touch = np.flatnonzero(u[:, 0] >= p_insert)[: len(occupied)]
        if len(touch):
            slots = self._rng.choice(occupied, size=len(touch), replace=False)
            if isinstance(p_update, np.ndarray):
                p_update = p_update[touch]
            gone = u[touch, 0] >= p_update  # a purged test or fraud order
            op[touch] = np.where(gone, _DELETE, _UPDATE)
            no[touch], cust[touch], ts[touch] = self._no[slots], self._cust[slots], self._ts[slots]
            prod[touch] = self._prod[slots]
            was_status[touch], was_qty[touch] = self._status[slots], self._qty[slots]
            at = touch[~gone]
            self._advance(slots[~gone], u[at, 1], u[at, 2])
            status[touch], qty[touch] = self._status[slots], self._qty[slots]
            self._no[slots[gone]] = 0

        # Inserts: new orders, PENDING, joining the ring at its end (pushing out the oldest).
        ins = np.flatnonzero(op == _INSERT)
        n = len(ins)
        if n:
            g = self.identity.generator
            new_no = np.arange(self._next_order, self._next_order + n, dtype=np.int64)
            self._next_order += n
            c = np.searchsorted(self._customer_cum, u[ins, 3] * self._customer_cum[-1])
            p = np.searchsorted(self._product_cum, u[ins, 4] * self._product_cum[-1])
            q = np.searchsorted(self._qty_cum, u[ins, 5] * self._qty_cum[-1]) + 1
            if when is None:
                t = self._start + seq[ins] * self._gap - u[ins, 6] * self._backdate
            else:
                t = when[ins] - u[ins, 6] * self._backdate
            t = t.astype(np.int64)
            no[ins], cust[ins], ts[ins], prod[ins], qty[ins] = new_no, c, t, p, q
            status[ins] = was_status[ins] = _PENDING
            was_qty[ins] = q
            at = (self._next_slot + np.arange(n)) % g.active_orders
            self._next_slot = int(at[-1] + 1) % g.active_orders
            # A ring smaller than a block: orders pushed out within their own block
            # are never written (numpy leaves a repeated index's winner undefined).
            keep = slice(max(0, n - g.active_orders), n)
            at, new_no, c, t, p, q = at[keep], new_no[keep], c[keep], t[keep], p[keep], q[keep]
            self._no[at], self._cust[at], self._ts[at] = new_no, c, t
            self._status[at], self._prod[at], self._qty[at] = _PENDING, p, q
        cents = qty * self._prices[prod]
        return Changes(
            self.prefix, seq, op, no, cust, ts, status, cents, prod, qty, was_status, was_qty
        )

    def _advance(self, slots: np.ndarray, x: np.ndarray, y: np.ndarray) -> None:
        """Move each order in ``slots`` one step along its lifecycle (in the ring)."""
        old = self._status[slots]
        new = old.copy()
        pending = old == _PENDING
        requantity = pending & (x < 0.25)  # the customer changes the quantity
        new[pending & (x >= 0.25) & (x < 0.33)] = _CANCELLED
        new[pending & (x >= 0.33)] = _PROCESSING
        processing = old == _PROCESSING
        new[processing] = np.where(x[processing] < 0.07, _CANCELLED, _SHIPPED)
        new[old == _SHIPPED] = _DELIVERED
        new[old == _DELIVERED] = _RETURNED  # only orders that will be returned stay DELIVERED
        q_old = self._qty[slots]
        q_new = (y * 5).astype(np.int64) + 1
        q_new = np.where(q_new == q_old, q_new % 5 + 1, q_new)
        self._qty[slots] = np.where(requantity, q_new, q_old)
        self._status[slots] = new
        # Final states leave the ring; most deliveries are final too.
        final = (new == _CANCELLED) | (new == _RETURNED) | ((new == _DELIVERED) & (y < 0.9))
        self._no[slots[final]] = 0


#: The ring's columns, in the order a snapshot stores them.
_RING = ("no", "cust", "ts", "status", "prod", "qty")
_SNAPSHOT_MAGIC = b"CDCSNAP1"


class SnapshotError(ValueError):
    """A snapshot that cannot continue this stream (another identity or version, damaged)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An OrderStream's state at a block boundary: a cache of a pure function's state.

    Encoded as a magic, then zlib of a JSON header and the ring's columns, each
    byte-shuffled (byte 0 of every value, then byte 1, ...: the high bytes of
    order numbers and dates repeat, and compress to almost nothing). About 130 KB
    for the default 20,000-slot ring; the same state always encodes to the same bytes.
    """

    identity: str  # StreamIdentity.digest()
    drawn: int
    next_slot: int
    next_order: int
    counts: tuple[int, int, int]  # inserts, updates, deletes handed out
    rng: str  # the PCG64 state, as JSON
    ring: tuple[np.ndarray, ...]  # in _RING order

    @property
    def seq(self) -> int:
        return self.drawn

    def encode(self) -> bytes:
        header = {
            "version": GENERATOR_VERSION,
            "identity": self.identity,
            "drawn": self.drawn,
            "next_slot": self.next_slot,
            "next_order": self.next_order,
            "counts": list(self.counts),
            "rng": self.rng,
            "ring": [[a.dtype.str, len(a)] for a in self.ring],
        }
        head = json.dumps(header, sort_keys=True).encode()
        body = b"".join(_shuffle(a) for a in self.ring)
        return _SNAPSHOT_MAGIC + zlib.compress(struct.pack("<I", len(head)) + head + body, 6)

    @classmethod
    def decode(cls, blob: bytes) -> Snapshot:
        if not blob.startswith(_SNAPSHOT_MAGIC):
            raise SnapshotError("not a generator snapshot")
        try:
            raw = zlib.decompress(blob[len(_SNAPSHOT_MAGIC) :])
            (size,) = struct.unpack_from("<I", raw)
            header = json.loads(raw[4 : 4 + size])
        except (zlib.error, struct.error, ValueError) as exc:
            raise SnapshotError(f"a damaged snapshot ({exc})") from None
        if header.get("version") != GENERATOR_VERSION:
            raise SnapshotError(
                f"the snapshot is of generator v{header.get('version')}, this is v{GENERATOR_VERSION}"
            )
        try:
            return cls._from(header, raw, 4 + size)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise SnapshotError(f"a damaged snapshot ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from(cls, header: dict[str, Any], raw: bytes, at: int) -> Snapshot:
        ring = []
        for dtype, n in header["ring"]:
            width = np.dtype(dtype).itemsize * n
            ring.append(_unshuffle(raw[at : at + width], np.dtype(dtype), n))
            at += width
        if at != len(raw) or len(ring) != len(_RING):
            raise SnapshotError("a damaged snapshot (its length does not match its header)")
        counts = header["counts"]
        return cls(
            identity=str(header["identity"]),
            drawn=int(header["drawn"]),
            next_slot=int(header["next_slot"]),
            next_order=int(header["next_order"]),
            counts=(int(counts[0]), int(counts[1]), int(counts[2])),
            rng=str(header["rng"]),
            ring=tuple(ring),
        )


def _shuffle(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).view(np.uint8).reshape(len(a), a.itemsize).T.tobytes()


def _unshuffle(raw: bytes, dtype: np.dtype[Any], n: int) -> np.ndarray:
    if len(raw) != dtype.itemsize * n:
        raise SnapshotError("a damaged snapshot (a column is cut short)")
    b = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, n)
    return np.ascontiguousarray(b.T).view(dtype).reshape(n).copy()


def replay(identity: StreamIdentity, upto: int | Mapping[int, int]) -> dict[str, Row]:
    """What ``raw_orders`` holds for the stream, in memory: after its first ``upto`` events,
    or, given checkpoints, after each partition's events up to its checkpoint."""
    if isinstance(upto, int):
        last, applied_to = upto, None
    else:
        last = max(upto.values(), default=0)
        applied_to = checkpoint_array(dict(upto), identity.partitions)
    state: dict[str, Row] = {}
    stream = OrderStream(identity)
    while stream.seq < last:
        changes = stream.take_changes(min(65_536, last - stream.seq))
        if applied_to is not None:
            parts = partitions_of(changes.order_no, identity.partitions)
            changes = changes.take(changes.seq <= applied_to[parts])
        for ev in changes.events():
            if ev.op is Op.DELETE:
                del state[ev.order_id]
            else:
                state[ev.order_id] = ev.row()
    return state
