"""The producer coroutine: generate, pace, route, and wait on a full queue.

Waiting is the backpressure: the producer never drops an event, and the
queues never hold more than ``--queue-size`` events (plus one chunk), so memory
does not grow with the length of the run. The time spent waiting is counted.
The pace (``--rate``, shaped by the traffic profile) is :mod:`pace`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from .. import logs
from ..watch.metrics import Metrics, Stats
from .events import Chunk, Op
from .generator import BLOCK, OrderStream
from .pace import Pace
from .queue import EventQueue
from .resume import SnapshotWriter
from .router import Router

log = logs.get("producer")

#: Events drawn per step when fast-forwarding on resume (~20 ms of work).
FAST_FORWARD_CHUNK = 16_384
#: A fast-forward at least this long ends with a snapshot where it stops.
SNAPSHOT_AFTER_FAST_FORWARD = 64 * BLOCK


async def produce(
    stream: OrderStream,
    router: Router,
    queues: Sequence[EventQueue],
    stopping: asyncio.Event,
    stats: Stats,
    metrics: Metrics,
    *,
    events: int | None = None,
    duration: float | None = None,
    rate: float = 0.0,
    snapshots: SnapshotWriter | None = None,
    pace: Pace | None = None,
) -> None:
    """Run until ``events`` are generated, ``duration`` has passed, or ``stopping`` is set.

    ``stream`` may continue from a snapshot (every partition holds its events). Every
    so often ``snapshots`` copies the stream's state, to be saved off the event loop.
    ``pace`` (default: ``rate`` on the stream's clock) says when each event is due.
    Ends by putting the end-of-stream marker on every queue.
    """
    loop = asyncio.get_running_loop()
    deadline = None if duration is None else loop.time() + duration
    pace = pace or Pace(stream, rate)
    workers = len(queues)
    await _fast_forward(stream, router, stopping, stats, events, snapshots)
    pace.begin(loop.time(), loop.time)
    while not stopping.is_set():
        now = loop.time()
        n = pace.step(now)
        if events is not None:
            n = min(n, events - stream.seq)
        if n <= 0 or (deadline is not None and now >= deadline):
            break
        if snapshots is not None:
            n = snapshots.step(stream.seq, n)
        if not await pace.wait(stream.seq + n, stopping, deadline):
            continue  # a stop, the deadline, or an early wake: look again
        skipped = router.skipped
        changes = stream.take_changes(n)
        if snapshots is not None:
            snapshots.offer(stream)
        routed = router.route(changes, workers)
        if router.skipped != skipped:
            # Resuming: what the target already holds is not generated again.
            made = _count_routed(routed)
            stats.skipped += router.skipped - skipped
        else:
            made = changes.counts()
        for op, k in made.items():
            stats.generated[op] += k
        metrics.count_generated(made)
        for w, item in enumerate(routed):
            if not len(item[0]):
                continue
            q = queues[w]
            if q.full():
                t0 = loop.time()
                await q.put(item)
                waited = loop.time() - t0
                stats.blocked_seconds += waited
                metrics.blocked.inc(waited)
            else:
                q.put_nowait(item)
        # Let the consumers and timers run even when no queue is full.
        await asyncio.sleep(0)
    pace.finish()
    for q in queues:
        await q.put(None)


async def _fast_forward(
    stream: OrderStream,
    router: Router,
    stopping: asyncio.Event,
    stats: Stats,
    events: int | None,
    snapshots: SnapshotWriter | None = None,
) -> None:
    """Resuming: regenerate, without routing, what every partition already holds.

    A stream continued from a snapshot starts past events every partition holds:
    they count as skipped. Events up to the lowest checkpoint are all skipped
    anyway; drawing them without routing and filtering is about three times
    faster. Between the lowest and the highest checkpoint the router skips event
    by event.
    """
    stats.skipped += stream.seq
    stats.from_snapshot = stream.seq
    low = router.held_by_all if events is None else min(router.held_by_all, events)
    if stream.seq >= low:
        return
    loop = asyncio.get_running_loop()
    t0, first = loop.time(), stream.seq
    if snapshots is not None and low - first >= SNAPSHOT_AFTER_FAST_FORWARD:
        # The next restart starts here rather than at the last regular snapshot.
        snapshots.also_at(low // BLOCK * BLOCK)
    while stream.seq < low and not stopping.is_set():
        n = min(FAST_FORWARD_CHUNK, low - stream.seq)
        if snapshots is not None:
            n = snapshots.step(stream.seq, n)
        stream.take_changes(n)
        stats.skipped += n
        if snapshots is not None:
            snapshots.offer(stream)
        await asyncio.sleep(0)  # signals, health checks and the progress bar keep running
    log.info(
        "producer.fast_forwarded",
        events=stream.seq - first,
        seconds=round(loop.time() - t0, 3),
        from_seq=first,
        to_seq=stream.seq,
    )


def _count_routed(routed: Sequence[Chunk]) -> dict[Op, int]:
    made = {Op.INSERT: 0, Op.UPDATE: 0, Op.DELETE: 0}
    for changes, _ in routed:
        for op, k in changes.counts().items():
            made[op] += k
    return made
