"""The dashboard's per-second series: a bounded ring, sampled from the run's counters.

Once a second a task started by the runner takes one :class:`Sample` from
:class:`~service.watch.metrics.Stats` and :class:`~service.watch.metrics.Metrics`: events
applied per second by operation, the queue depth, the mean batch apply time,
the seconds since the last commit, and the traffic profile's target rate of the
moment (none when the run goes as fast as possible). Rates and the mean are taken over the
last ``SMOOTH`` seconds: workers commit about once per flush interval, a
little more than a second apart, so a one-second window would now and then
catch no commit at all and show a false drop to zero. The ring keeps the last
``capacity`` samples (ten minutes by default): its memory does not grow with
the length of the run.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .metrics import OPS, Metrics, Stats

CAPACITY = 600  # samples: ten minutes at one a second
EVERY = 1.0
SMOOTH = 5  # samples the rates are taken over


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # Unix time
    inserts: float  # events applied per second (over the last SMOOTH s), by operation
    updates: float
    deletes: float
    queue: int
    apply_ms: float | None  # mean apply time of the batches committed in those seconds
    since_commit: float | None  # seconds since the last commit (None: none yet)
    target: float | None = None  # events per second the traffic profile asks for (None: unpaced)

    @property
    def events(self) -> float:
        return self.inserts + self.updates + self.deletes


class Telemetry:
    """The ring, and what the last sample was taken from (to turn counters into rates)."""

    def __init__(self, capacity: int = CAPACITY, smooth: int = SMOOTH) -> None:
        self.samples: deque[Sample] = deque(maxlen=capacity)
        #: The counters at the last ``smooth`` samples: a rate is taken from the oldest.
        self._counters: deque[tuple[float, tuple[int, ...], float, int]] = deque(maxlen=smooth)

    def sample(
        self,
        stats: Stats,
        metrics: Metrics,
        queue: int,
        now: float | None = None,
        target: float | None = None,
    ) -> None:
        mono = time.monotonic() if now is None else now
        applied = tuple(stats.applied[op] for op in OPS)
        seconds, batches = metrics.apply_seconds, metrics.apply_batches
        since = mono - stats.last_commit if stats.last_commit else None
        if self._counters:
            t0, before, s0, b0 = self._counters[0]
            dt = max(mono - t0, 1e-9)
            ins, upd, dele = ((a - b) / dt for a, b in zip(applied, before, strict=True))
            apply_ms = (seconds - s0) / (batches - b0) * 1000 if batches > b0 else None
            wall = time.time() - (time.monotonic() - mono)
            self.samples.append(Sample(wall, ins, upd, dele, queue, apply_ms, since, target))
        self._counters.append((mono, applied, seconds, batches))

    def latest(self) -> Sample | None:
        return self.samples[-1] if self.samples else None

    def series(self, last: int | None = None) -> dict[str, list[Any]]:
        """Column-wise, oldest first: what the dashboard draws."""
        picked = list(self.samples)[-last:] if last else list(self.samples)
        return {
            "at": [round(s.at, 3) for s in picked],
            "insert": [round(s.inserts, 1) for s in picked],
            "update": [round(s.updates, 1) for s in picked],
            "delete": [round(s.deletes, 1) for s in picked],
            "queue": [s.queue for s in picked],
            "apply_ms": [None if s.apply_ms is None else round(s.apply_ms, 2) for s in picked],
            "target": [None if s.target is None else round(s.target, 1) for s in picked],
        }


async def run(
    telemetry: Telemetry,
    stats: Stats,
    metrics: Metrics,
    queue_depth: Callable[[], int],
    every: float = EVERY,
    target: Callable[[], float | None] = lambda: None,
) -> None:
    """Sample every ``every`` seconds until cancelled."""
    while True:
        telemetry.sample(stats, metrics, queue_depth(), target=target())
        await asyncio.sleep(every)
