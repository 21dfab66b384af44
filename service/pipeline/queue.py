"""The bounded queue between the producer and a worker: the backpressure.

Items are chunks of events (their columns and their partitions): handing
events over one by one would cost more than generating them. The bound is
still counted in events, so ``--queue-size`` means what it says: a ``put``
waits while the queue holds that many events or more (it can overshoot by at
most one chunk).
"""

from __future__ import annotations

import asyncio
from collections import deque

from .events import Chunk


class EventQueue(asyncio.Queue[Chunk | None]):
    """An ``asyncio.Queue`` whose size is the number of events it holds.

    ``None`` is the end-of-stream marker: the producer has stopped.
    """

    _queue: deque[Chunk | None]
    _events: int

    def _init(self, maxsize: int) -> None:
        self._queue = deque()
        self._events = 0

    def _put(self, item: Chunk | None) -> None:
        self._queue.append(item)
        if item is not None:
            self._events += len(item[0])

    def _get(self) -> Chunk | None:
        item = self._queue.popleft()
        if item is not None:
            self._events -= len(item[0])
        return item

    def qsize(self) -> int:
        """Events held (not chunks)."""
        return self._events
