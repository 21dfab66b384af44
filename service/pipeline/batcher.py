"""Size-or-time batching of one worker's events: pure, no asyncio, no clock.

A batch closes when it holds ``size`` events, or when its first event has
waited ``linger`` seconds (as aiokafka's ``max_batch_size`` / ``linger_ms``).
The caller passes the time in, so the rule is tested without an event loop.
"""

from __future__ import annotations

import numpy as np

from .events import Changes, Chunk


class Batcher:
    """Collects chunks; hands out batches of at most ``size`` events, in arrival order."""

    __slots__ = ("_chunks", "_held", "_opened", "linger", "size")

    def __init__(self, size: int, linger: float) -> None:
        self.size = size
        self.linger = linger
        self._chunks: list[Chunk] = []
        self._held = 0
        self._opened = 0.0  # when the first event of the open batch arrived

    @property
    def held(self) -> int:
        """Events in the open batch."""
        return self._held

    def deadline(self) -> float | None:
        """When the open batch must close (None: nothing is held)."""
        return self._opened + self.linger if self._held else None

    def due(self, now: float) -> bool:
        return bool(self._held) and now - self._opened >= self.linger

    def add(self, chunk: Chunk, now: float) -> list[Chunk]:
        """Add a chunk; returns the batches it filled (a remainder stays open)."""
        if not len(chunk[0]):
            return []
        if not self._held:
            self._opened = now
        self._chunks.append(chunk)
        self._held += len(chunk[0])
        return self._cut(now, flush=False) if self._held >= self.size else []

    def flush(self, now: float) -> list[Chunk]:
        """Everything held, as batches of at most ``size`` events."""
        return self._cut(now, flush=True) if self._held else []

    def _cut(self, now: float, *, flush: bool) -> list[Chunk]:
        changes = Changes.concat([c for c, _ in self._chunks])
        parts = np.concatenate([p for _, p in self._chunks])
        held, size = self._held, self.size
        out: list[Chunk] = []
        start = 0
        while held - start >= size:
            out.append((changes.take(slice(start, start + size)), parts[start : start + size]))
            start += size
        if start < held and flush:
            out.append((changes.take(slice(start, held)), parts[start:]))
            start = held
        # What is left opens a new batch now: it waits its own linger.
        self._chunks = [(changes.take(slice(start, held)), parts[start:])] if start < held else []
        self._held = held - start
        self._opened = now
        return out
