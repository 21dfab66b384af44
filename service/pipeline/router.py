"""The router: every change to one order goes to the same partition, and so to the same worker.

The partition count is fixed per stream (it is part of the stream's identity)
and never depends on the worker count: checkpoints are kept per partition, so a
restart with more or fewer workers resumes exactly where each partition stopped.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .events import Changes, Chunk, id_number

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: 2**64 / the golden ratio


def partitions_of(order_numbers: np.ndarray, partitions: int) -> np.ndarray:
    """A stable hash of each key (Python's own ``hash`` changes per process).

    The key is the order number (the id is its shard's prefix and that
    number): multiplied by 2**64 / phi, whose high bits spread consecutive
    numbers evenly.
    """
    h = order_numbers.astype(np.uint64) * _GOLDEN  # wraps mod 2**64, as meant
    return ((h >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def partition_of(order_id: str, partitions: int) -> int:
    """The partition of one order id (``partitions_of`` for a single key)."""
    return int(partitions_of(np.array([id_number(order_id)], np.int64), partitions)[0])


def checkpoint_array(checkpoints: Mapping[int, int], partitions: int) -> np.ndarray:
    """Checkpoints indexed by partition (0 where a partition has none)."""
    out = np.zeros(partitions, np.int64)
    for p, seq in checkpoints.items():
        if 0 <= p < partitions:
            out[p] = seq
    return out


def held_by_all(checkpoints: Mapping[int, int], partitions: int) -> int:
    """Up to this sequence number every partition has applied every event (a partition
    without a checkpoint holds nothing)."""
    return int(checkpoint_array(checkpoints, partitions).min())


def worker_of(partition: int, workers: int) -> int:
    return partition % workers


class Router:
    """Splits a run of events by owning worker, dropping what a checkpoint already holds."""

    __slots__ = (
        "_ckpt",
        "_floor",
        "_owner",
        "_partitions",
        "held_by_all",
        "skipped",
    )

    def __init__(self, partitions: int, workers: int, checkpoints: dict[int, int]) -> None:
        self._partitions = partitions
        self._owner = np.array([worker_of(p, workers) for p in range(partitions)], np.int64)
        self._ckpt = checkpoint_array(checkpoints, partitions)
        # Past the highest checkpoint nothing can have been applied: skip the lookups.
        self._floor = int(self._ckpt.max())
        #: Up to this sequence number every partition has applied every event.
        self.held_by_all = held_by_all(checkpoints, partitions)
        #: Events :meth:`route` dropped: their partition's checkpoint already held them.
        self.skipped = 0

    def route(self, changes: Changes, workers: int) -> list[Chunk]:
        """Per worker: its events in sequence order, and the partition of each."""
        parts = partitions_of(changes.order_no, self._partitions)
        if len(changes) and changes.seq[0] <= self._floor:
            fresh = changes.seq > self._ckpt[parts]
            self.skipped += int(len(fresh) - np.count_nonzero(fresh))
            changes, parts = changes.take(fresh), parts[fresh]
        if workers == 1:
            return [(changes, parts)]
        owner = self._owner[parts]
        out = []
        for w in range(workers):
            mine = owner == w
            out.append((changes.take(mine), parts[mine]))
        return out
