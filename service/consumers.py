"""The consumer coroutines: batch on size or time, collapse to the net effect, apply.

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
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import logs
from .events import Batch, Changes, Op, net_effect
from .metrics import Metrics, Stats
from .queue import EventQueue
from .sinks.base import Sink, Writer

log = logs.get("consumer")


def _apply(writer: Writer, batch: Batch) -> tuple[float, int]:
    """Apply on the worker's thread; returns the seconds taken and the retries it needed.

    A writer that retries transient errors itself counts them in ``retries``.
    """
    before = getattr(writer, "retries", 0)
    t0 = time.perf_counter()
    writer.apply(batch)
    return time.perf_counter() - t0, getattr(writer, "retries", 0) - before


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
    executor = ThreadPoolExecutor(1, thread_name_prefix=f"cdc-worker-{worker}")
    inflight: asyncio.Future[tuple[float, int]] | None = None
    inflight_batch: Batch | None = None
    writer: Writer | None = None

    async def settle() -> None:
        """Wait for the batch in flight and account for it."""
        nonlocal inflight, inflight_batch
        if inflight is None or inflight_batch is None:
            return
        try:
            seconds, retries = await inflight
        except BaseException:
            metrics.errors.inc()
            raise
        if retries:
            stats.retries += retries
            metrics.retries.inc(retries)
        b = inflight_batch
        inflight = inflight_batch = None
        for op, n in b.counts.items():
            stats.applied[op] += n
        stats.batches += 1
        stats.last_commit = time.monotonic()
        stats.rows_written += len(b.rows)
        metrics.count_applied(b.counts, seconds)
        sizes = b.sizes()
        log.debug(
            "sink.batch_committed",
            worker=worker,
            events=b.events,
            inserts=sizes[Op.INSERT],
            updates=sizes[Op.UPDATE],
            deletes=sizes[Op.DELETE],
            last_seq=b.last_seq,
            seconds=round(seconds, 4),
        )

    async def submit(events: Changes, parts: np.ndarray) -> None:
        nonlocal inflight, inflight_batch
        batch = net_effect(worker, events, parts)  # on the loop, while the last one commits
        await settle()
        assert writer is not None
        inflight_batch = batch
        inflight = loop.run_in_executor(executor, _apply, writer, batch)

    try:
        writer = await loop.run_in_executor(executor, sink.writer, worker)
        # The open batch: chunks as they came, joined when the batch closes.
        chunks: list[Changes] = []
        chunk_parts: list[np.ndarray] = []
        held = 0
        opened = 0.0  # when the first event of the open batch arrived
        done = False
        while not done:
            item = None
            timed_out = False
            if not queue.empty():
                item = queue.get_nowait()
            elif not held:
                item = await queue.get()
            else:
                try:
                    async with asyncio.timeout(max(0.0, opened + flush_interval - loop.time())):
                        item = await queue.get()
                except TimeoutError:
                    timed_out = True
            if item is None and not timed_out:
                done = True
            elif item is not None and len(item[0]):
                if not held:
                    opened = loop.time()
                chunks.append(item[0])
                chunk_parts.append(item[1])
                held += len(item[0])
            if held >= batch_size or (
                held and (done or timed_out or loop.time() - opened >= flush_interval)
            ):
                events = Changes.concat(chunks)
                parts = np.concatenate(chunk_parts)
                chunks, chunk_parts = [], []
                start = 0
                while held - start >= batch_size:
                    await submit(
                        events.take(slice(start, start + batch_size)),
                        parts[start : start + batch_size],
                    )
                    start += batch_size
                    opened = loop.time()
                if start < held:
                    rest, rest_parts = events.take(slice(start, held)), parts[start:]
                    if done or timed_out or loop.time() - opened >= flush_interval:
                        await submit(rest, rest_parts)
                    else:
                        chunks, chunk_parts = [rest], [rest_parts]
                held = sum(map(len, chunks))
        await settle()
    finally:
        if inflight is not None:
            # Never close a connection under a transaction: let it commit or
            # fail on its thread first (its checkpoint says which, next time).
            with contextlib.suppress(BaseException):
                await asyncio.shield(inflight)
        if writer is not None:
            await loop.run_in_executor(executor, writer.close)
        executor.shutdown(wait=False)
