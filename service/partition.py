"""Routing: every change to one order goes to the same partition, and so to the same worker.

The partition count is fixed per stream (it is part of the stream's identity)
and never depends on the worker count: checkpoints are kept per partition, so a
restart with more or fewer workers resumes exactly where each partition stopped.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

from .events import Event

#: Partitions per stream. Checkpoints are per partition; workers own partitions.
DEFAULT_PARTITIONS = 64


def partition_of(order_id: str, partitions: int) -> int:
    """A stable hash of the key (Python's own ``hash`` changes per process)."""
    return zlib.crc32(order_id.encode()) % partitions


def worker_of(partition: int, workers: int) -> int:
    return partition % workers


class Router:
    """Splits a chunk of events by owning worker, dropping what a checkpoint already holds."""

    __slots__ = ("_floor", "_owner", "_partitions", "checkpoints", "skipped")

    def __init__(self, partitions: int, workers: int, checkpoints: dict[int, int]) -> None:
        self._partitions = partitions
        self._owner = [worker_of(p, workers) for p in range(partitions)]
        self.checkpoints = dict(checkpoints)
        # Past the highest checkpoint nothing can have been applied: skip the lookups.
        self._floor = max(self.checkpoints.values(), default=0)
        self.skipped = 0

    def route(self, events: Sequence[Event], workers: int) -> list[tuple[list[Event], list[int]]]:
        """Per worker: its events in sequence order, and the partition of each."""
        crc32, n = zlib.crc32, self._partitions
        owner = self._owner
        out: list[tuple[list[Event], list[int]]] = [([], []) for _ in range(workers)]
        if events and events[0][0] <= self._floor:
            ckpt = self.checkpoints
            for ev in events:
                p = crc32(ev[2].encode()) % n
                if ev[0] <= ckpt.get(p, 0):
                    self.skipped += 1
                    continue
                evs, parts = out[owner[p]]
                evs.append(ev)
                parts.append(p)
            return out
        for ev in events:
            p = crc32(ev[2].encode()) % n
            evs, parts = out[owner[p]]
            evs.append(ev)
            parts.append(p)
        return out
