"""The consumer coroutines: take chunks off a worker's queue, batch them, apply each batch.

Each worker owns a fixed set of partitions and one thread, on which its
writer (its connection) lives. Its batches are applied strictly one after
another: batch k+1 is submitted only once batch k has committed, so a failed
batch can never be overtaken by a later one whose checkpoint would skip it.
While batch k is being applied, batch k+1 is already being collected.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal

from .. import logs, threads
from ..sinks.base import Sink, Writer
from ..watch.metrics import Metrics, Stats
from .batcher import Batcher
from .events import Batch, Chunk, Op
from .net_effect import net_effect
from .queue import EventQueue

log = logs.get("consumer")


def _apply(writer: Writer, batch: Batch) -> tuple[float, int]:
    """Apply on the worker's thread; returns the seconds taken and the retries it needed."""
    before = writer.retries
    t0 = time.perf_counter()
    writer.apply(batch)
    return time.perf_counter() - t0, writer.retries - before


class Applier:
    """One worker's writer on its own thread, with at most one batch in flight."""

    def __init__(self, worker: int, stats: Stats, metrics: Metrics) -> None:
        self.worker = worker
        self._stats, self._metrics = stats, metrics
        self._thread = threads.Worker(f"cdc-worker-{worker}")
        self._writer: Writer | None = None
        self._inflight: asyncio.Future[tuple[float, int]] | None = None
        self._batch: Batch | None = None

    async def open(self, sink: Sink) -> None:
        """The writer is created on the thread that will use it."""
        self._writer = await self._thread.submit(sink.writer, self.worker)

    async def submit(self, batch: Batch) -> None:
        """Wait for the batch in flight to commit, then start this one."""
        await self.settle()
        assert self._writer is not None
        self._batch = batch
        self._inflight = self._thread.submit(_apply, self._writer, batch)

    async def settle(self) -> None:
        """Wait for the batch in flight, and account for it."""
        if self._inflight is None or self._batch is None:
            return
        # Shielded: a cancelled waiter must not cancel the batch's future (the batch goes
        # on, on its thread, and close() still waits for it before closing the writer).
        seconds, retries = await asyncio.shield(self._inflight)
        batch, self._inflight, self._batch = self._batch, None, None
        self._stats.record_batch(batch, retries)
        self._metrics.record_batch(batch, seconds)
        sizes = batch.sizes()
        log.debug(
            "sink.batch_committed",
            worker=self.worker,
            events=batch.size,
            inserts=sizes[Op.INSERT],
            updates=sizes[Op.UPDATE],
            deletes=sizes[Op.DELETE],
            last_seq=batch.last_seq,
            seconds=round(seconds, 4),
        )

    async def close(self) -> None:
        """Never close a connection under a transaction: let the batch in flight commit or
        fail on its thread first (its checkpoint says which, next time). A shutdown that has
        run out of time does not wait for this (the runner abandons the thread)."""
        try:
            if self._inflight is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._inflight)
            if self._writer is not None:
                await self._thread.submit(self._writer.close)
        finally:
            self._thread.stop()


async def _next(queue: EventQueue, deadline: float | None) -> Chunk | Literal[False] | None:
    """The next chunk; None at the end of the stream; False when ``deadline`` passed first."""
    if not queue.empty():
        return queue.get_nowait()
    if deadline is None:
        return await queue.get()
    try:
        async with asyncio.timeout_at(deadline):
            return await queue.get()
    except TimeoutError:
        return False


async def consume(
    worker: int,
    queue: EventQueue,
    sink: Sink,
    stats: Stats,
    metrics: Metrics,
    *,
    batch_size: int,
    flush_interval: float,
) -> None:
    """Apply everything put on ``queue`` until its end-of-stream marker, then return."""
    loop = asyncio.get_running_loop()
    batcher = Batcher(batch_size, flush_interval)
    applier = Applier(worker, stats, metrics)
    try:
        await applier.open(sink)
        while True:
            item = await _next(queue, batcher.deadline())
            now = loop.time()
            if item is None or item is False:  # the end, or the open batch's linger is up
                ready = batcher.flush(now)
            else:
                ready = batcher.add(item, now)
                if batcher.due(now):
                    ready += batcher.flush(now)
            for changes, parts in ready:
                # The net effect is worked out on the loop while the last batch commits.
                await applier.submit(net_effect(worker, changes, parts))
            if item is None:
                break
        await applier.settle()
    finally:
        await applier.close()
