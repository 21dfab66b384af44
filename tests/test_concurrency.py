"""Per-key order under concurrency, and backpressure with a slow sink."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import defaultdict

import psutil

from service.pipeline.events import Batch, Op
from service.pipeline.generator import replay
from service.pipeline.pace import CHUNK
from service.pipeline.router import partition_of, worker_of
from service.runner import Service
from service.sinks.null import NullSink

from .conftest import config, identity


class RecordingSink(NullSink):
    """An in-memory target (no SQL, like the null sink): applies batches to a dict, slowly."""

    def __init__(self, delay: tuple[float, float] = (0.0, 0.02), keep: bool = True) -> None:
        super().__init__("0")
        self.delay = delay
        self.keep = keep  # False: each batch's size, the first and the latest batch only
        self.sizes: list[int] = []
        self.state: dict[str, tuple[object, ...]] = {}
        self.applied: dict[str, list[int]] = defaultdict(list)
        self.batches: list[Batch] = []
        self.lock = threading.Lock()
        self.threads: dict[int, set[int]] = defaultdict(set)

    def writer(self, worker: int) -> RecordingSink.Writer:
        return RecordingSink.Writer(self, worker)

    class Writer:
        retries = 0

        def __init__(self, sink: RecordingSink, worker: int) -> None:
            self.sink, self.worker = sink, worker

        def apply(self, batch: Batch) -> None:
            time.sleep(random.uniform(*self.sink.delay))
            s = self.sink
            with s.lock:
                s.threads[self.worker].add(threading.get_ident())
                s.sizes.append(batch.size)
                if not s.keep:
                    s.batches[1:] = []
                    s.batches.append(batch)
                    return
                s.batches.append(batch)
                for e in batch.inserts:
                    assert e.order_id not in s.state
                    s.state[e.order_id] = tuple(e.row())
                    s.applied[e.order_id].append(e.seq)
                for e in batch.updates:
                    assert e.order_id in s.state
                    s.state[e.order_id] = tuple(e.row())
                    s.applied[e.order_id].append(e.seq)
                for oid in batch.deletes:
                    del s.state[oid]
                    s.applied[oid].append(-1)

        def close(self) -> None: ...


def test_per_key_order_holds_with_many_workers_and_random_apply_times() -> None:
    """8 workers with batches in flight at random speeds: every order's changes land in order."""
    sink = RecordingSink()
    n = 60_000
    service = Service(config(events=n, workers=8, batch_size=700, flush_interval=0.05), sink=sink)
    asyncio.run(service.run())
    assert sink.state == replay(identity(), n)
    for oid, seqs in sink.applied.items():
        live = [s for s in seqs if s != -1]
        assert live == sorted(live), oid
        if -1 in seqs:
            assert seqs[-1] == -1, f"{oid} changed after its delete"
    for b in sink.batches:  # a worker only ever sees its own partitions
        assert all(worker_of(p, 8) == b.worker for p in b.checkpoints)
        assert all(worker_of(partition_of(e.order_id, 64), 8) == b.worker for e in b.inserts)
    assert all(len(t) == 1 for t in sink.threads.values()), "one thread per worker"
    assert len(sink.batches) > 8 * 2


def test_a_slow_sink_keeps_the_queue_at_its_bound_and_memory_flat() -> None:
    """The producer waits on a full queue: depth never passes the bound, RSS does not climb."""
    sink = RecordingSink(delay=(0.02, 0.02), keep=False)  # the sink itself holds nothing
    queue_size, n = 4000, 80_000
    service = Service(config(events=n, workers=2, batch_size=500, queue_size=queue_size), sink=sink)
    depths: list[int] = []
    rss: list[int] = []
    proc = psutil.Process()

    async def main() -> None:
        task = asyncio.ensure_future(service.run())
        while not task.done():
            depths.append(service.queue_depth())
            if service.stats.generated_total > n * 0.25:
                rss.append(proc.memory_info().rss)
            await asyncio.sleep(0.005)
        await task

    asyncio.run(main())
    assert service.stats.applied_total == n
    assert max(depths) <= queue_size + CHUNK
    assert max(depths) >= queue_size * 0.75, "the queue did fill up"
    assert service.stats.blocked_seconds > 0.5, "the producer waited"
    # Nothing of the pipeline's grows with the events (the sink keeps none of them).
    growth_mb = (max(rss) - min(rss)) / 2**20
    assert growth_mb < 40, growth_mb
    assert sum(sink.sizes) == n and max(sink.sizes) <= 500
    assert Op.INSERT in sink.batches[0].counts
