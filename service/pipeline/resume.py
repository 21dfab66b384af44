"""Generator snapshots: saved while the stream runs, read when it resumes.

A restart must find where each partition resumes, and the stream is a pure
function of its identity, so it could always be regenerated from seq 1 (that
took time in proportion to the stream's age). Instead, every ``SNAPSHOT_EVERY``
events the producer copies the generator's state (:meth:`OrderStream.capture`,
about 1 MB of arrays), and a daemon thread encodes and stores it beside the
checkpoints (:func:`checkpoint.save_snapshot`); a restart continues from the
newest snapshot that every partition has passed, and regenerates only from
there. A snapshot is a cache: using it or not gives the same events, so a
missing, unreadable or foreign one only costs time (one log line, and the
stream is regenerated from seq 1), and a save that fails is one warning line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from .. import logs, threads
from ..retry import Phase
from ..sinks.base import Sink, Warehouse
from ..watch.metrics import Metrics
from . import checkpoint
from .generator import BLOCK, OrderStream, Snapshot, SnapshotError, StreamIdentity
from .router import held_by_all

log = logs.get("producer")

#: Events between two snapshots (1,024 blocks). One costs a copy of ~1 MB in the
#: producer, then ~10 ms of encoding and one small transaction on a thread of its own.
SNAPSHOT_EVERY = 1024 * BLOCK


class SnapshotWriter:
    """Captures the stream's state every ``every`` events, at a block boundary, and saves it
    off the event loop; at most one save in flight (a capture due meanwhile is skipped).

    It does not check that this process still holds the shard: a snapshot is a pure
    function of (identity, seq), stored under the identity's digest, so one saved by a
    process that was taken over is exactly the one the new writer would save (and a
    process fenced by ``--reset`` saves under the old identity, which no resume of the
    new stream reads and the next save drops). The fenced process stops at its next batch.
    """

    def __init__(
        self,
        sink: Sink,
        identity: StreamIdentity,
        every: int | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._sink = sink
        self._digest = identity.digest()
        self.every = max(BLOCK, every or SNAPSHOT_EVERY)
        self._next: int | None = None
        self._saving: asyncio.Future[tuple[int, int, float]] | None = None
        #: ``cdc_snapshots_total{outcome}``: saved, failed, skipped (a save still in flight).
        #: Saves failing for good mean restarts regenerate more and more: worth an alert.
        self.metrics = metrics or Metrics()

    def _due(self, seq: int) -> int:
        if self._next is None:
            self._next = (seq // self.every + 1) * self.every
        return self._next

    def step(self, seq: int, n: int) -> int:
        """How many of ``n`` events the producer takes next: fewer when a snapshot falls due
        within them, so that the step ends at a block boundary (the events are the same)."""
        due = self._due(seq)
        if seq + n < due:
            return n
        boundary = -(-max(due, seq + 1) // BLOCK) * BLOCK  # the first one at or past both
        return min(n, boundary - seq)

    def also_at(self, seq: int) -> None:
        """Capture at block boundary ``seq`` too (where a fast-forward ends), if it comes before
        the next regular snapshot."""
        if self._due(seq) > seq and seq % BLOCK == 0:
            self._next = seq

    def offer(self, stream: OrderStream) -> None:
        """After each step of the producer: capture the state if a snapshot is due."""
        if stream.seq < self._due(stream.seq) or not stream.at_block_boundary:
            return
        self._next = (stream.seq // self.every + 1) * self.every
        if self._saving is not None and not self._saving.done():
            self.metrics.snapshots.labels(outcome="skipped").inc()
            return
        snap = stream.capture()
        self._saving = threads.run(self._save, snap, name="cdc-snapshot")
        self._saving.add_done_callback(self._saved)

    def _save(self, snap: Snapshot) -> tuple[int, int, float]:
        """On the snapshot's thread: encode and store it."""
        t0 = time.monotonic()
        blob = snap.encode()
        shard, digest = self._sink.shard, self._digest
        self._sink.run(
            lambda session: checkpoint.save_snapshot(session, shard, snap.seq, digest, blob),
            f"saving the generator snapshot at seq {snap.seq}",
            Phase.STREAM,
        )
        return snap.seq, len(blob), time.monotonic() - t0

    def _saved(self, future: asyncio.Future[tuple[int, int, float]]) -> None:
        if future.cancelled():
            return
        exc = future.exception()
        if exc is not None:
            self.metrics.snapshots.labels(outcome="failed").inc()
            log.warning("producer.snapshot_failed", error=logs.one_line(exc))
            return
        seq, size, seconds = future.result()
        self.metrics.snapshots.labels(outcome="saved").inc()
        self.metrics.snapshot_seq.set(seq)
        log.info("producer.snapshot_saved", seq=seq, bytes=size, seconds=round(seconds, 3))

    async def settle(self, timeout: float) -> None:
        """Let a save in flight finish (within ``timeout``) before the sink closes."""
        if self._saving is not None and not self._saving.done():
            await asyncio.wait({self._saving}, timeout=timeout)


def writer_for(
    sink: Sink, identity: StreamIdentity, metrics: Metrics | None = None
) -> SnapshotWriter | None:
    """A snapshot writer, unless the target holds nothing (``--target null``)."""
    return (
        None
        if sink.warehouse is Warehouse.NONE
        else SnapshotWriter(sink, identity, metrics=metrics)
    )


async def resume(
    sink: Sink, identity: StreamIdentity, checkpoints: Mapping[int, int], events: int | None
) -> OrderStream:
    """The stream to produce from: continued from the newest snapshot that every partition
    has passed, or from seq 1 when there is none (or it cannot be used)."""
    held = held_by_all(checkpoints, identity.partitions)
    upto = held if events is None else min(held, events)
    if upto < BLOCK or sink.warehouse is Warehouse.NONE:
        return OrderStream(identity)
    t0 = time.monotonic()
    shard, digest = sink.shard, identity.digest()
    try:
        found = await threads.run(
            sink.run,
            lambda session: checkpoint.load_snapshot(session, shard, digest, upto),
            "reading the generator snapshot",
            Phase.STREAM,
            name="cdc-snapshot",
        )
    except Exception as exc:  # an optimisation: never a reason to stop
        log.warning(
            "producer.snapshot_ignored", reason=logs.one_line(exc), then="regenerating from seq 1"
        )
        return OrderStream(identity)
    if found is None:
        log.info("producer.no_snapshot", upto=upto, then="regenerating from seq 1")
        return OrderStream(identity)
    seq, blob = found
    try:
        stream = OrderStream.from_snapshot(identity, blob)
        if stream.seq != seq:
            raise SnapshotError(f"it holds seq {stream.seq}, stored as seq {seq}")
    except SnapshotError as exc:
        log.warning(
            "producer.snapshot_ignored", seq=seq, reason=str(exc), then="regenerating from seq 1"
        )
        return OrderStream(identity)
    log.info(
        "producer.resumed_from_snapshot",
        seq=seq,
        bytes=len(blob),
        seconds=round(time.monotonic() - t0, 3),
    )
    return stream
