"""The wall-clock pace of a run: the simulated clock, ``--time-scale`` times the wall's.

The stream says *when* each event happens in simulated time (:mod:`simclock`); the
pace says when the producer hands it out: event ``seq`` is due once the simulated
clock, started at this run's first event and running ``scale`` simulated seconds per
wall second, reaches it. ``scale`` is ``--rate`` x the stream's simulated seconds per
event (``--time-scale``, or 0.5 x ``--rate`` for ``steady`` without one), so the wall
rate is ``--rate`` x the profile's multiplier at that moment, and a steady stream is
paced at ``--rate`` as before.

Behind schedule (the producer waited on a full queue), it hands events out as fast as
the queues take them until it has caught up: orders keep coming while the pipeline is
slow, as they would in a shop, and the backlog is drained, not forgiven. Where it is
on the schedule is what the dashboard and ``/metrics`` show: the target rate now, and
how many seconds behind the producer is. ``--rate 0`` has no schedule: as fast as
possible, the profile then acts on the events' times and mix alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

from .generator import OrderStream

#: Events handed out per step when unpaced or catching up (about 3-5 ms of work: at 1,024
#: the fixed cost per step held the null sink to 1.18-1.27M events/s, at 4,096 1.37-1.54M).
CHUNK = 4096
#: Steps a second when on schedule: small enough steps for a smooth rate.
STEPS_PER_SECOND = 50
#: Seconds behind schedule from which the producer takes whole chunks to catch up.
CATCH_UP = 0.05


@dataclass(frozen=True, slots=True)
class Reading:
    """Where a run is on its profile: what the dashboard, /metrics and the logs show."""

    profile: str  # steady, diurnal, flash-sale, or a file's profile name
    rate: float  # --rate: the mean the profile multiplies (0: as fast as possible)
    target: float | None  # events per second the profile asks for now (None: unpaced)
    multiplier: float  # the profile's multiplier at the schedule's simulated time
    simulated: float | None  # simulated time of the newest event generated (epoch seconds)
    behind: float  # seconds the producer is behind the schedule
    scale: float | None  # simulated seconds per wall second (None: unpaced)


class Pace:
    """When each event of ``stream`` is due on the wall clock of this run."""

    def __init__(self, stream: OrderStream, rate: float) -> None:
        self.stream = stream
        self.clock = stream.clock
        self.rate = rate
        self.scale = rate * self.clock.gap  # simulated seconds per wall second
        self._wall0: float | None = None
        self._sim0 = 0.0
        self._now: Callable[[], float] | None = None
        self._ended = False
        name = self.clock.profile.name if self.clock.profile is not None else "steady"
        self.profile = name

    @property
    def paced(self) -> bool:
        return self.rate > 0

    def begin(self, now: float, clock: Callable[[], float] | None = None) -> None:
        """The schedule starts ``now``, where the stream is (after a resume's fast-forward);
        ``clock`` (the loop's) is what :meth:`reading` reads the time from."""
        self._wall0, self._now = now, clock
        seq = self.stream.seq
        # From the last event handed out (the stream's start for a new one): a quiet
        # stretch ahead is waited for, not skipped.
        self._sim0 = self.clock.start if seq == 0 else self.clock.time_of(seq)

    def finish(self) -> None:
        """The producer has stopped: no target any more, and nothing is overdue."""
        self._ended = True

    def reading(self) -> Reading | None:
        """The figures of the moment (None: the producer has not started)."""
        if self._now is None:
            return None
        now, seq = self._now(), self.stream.seq
        newest = self.clock.time_of(seq) if seq > 0 else None
        # Paced: the profile where the schedule is; unpaced: where the stream is.
        at = self.scheduled(now) or newest or self._sim0
        return Reading(
            profile=self.profile,
            rate=self.rate,
            target=self.target(now),
            multiplier=self.clock.multiplier(at),
            simulated=newest,
            behind=self.behind(now),
            scale=self.scale if self.paced else None,
        )

    def due(self, seq: int) -> float:
        """The wall time (the loop's clock) event ``seq`` is due at."""
        assert self._wall0 is not None, "begin() first"
        return self._wall0 + (self.clock.time_of(seq) - self._sim0) / self.scale

    def scheduled(self, now: float) -> float | None:
        """The simulated time the schedule has reached (None: unpaced, not begun, ended)."""
        if not self.paced or self._wall0 is None or self._ended:
            return None
        return self._sim0 + (now - self._wall0) * self.scale

    def target(self, now: float) -> float | None:
        """Events per second the profile asks for now (None: as fast as possible)."""
        at = self.scheduled(now)
        return None if at is None else self.rate * self.clock.multiplier(at)

    def behind(self, now: float) -> float:
        """Seconds the next event is overdue (0: on schedule, or unpaced)."""
        if not self.paced or self._wall0 is None or self._ended:
            return 0.0
        return max(0.0, now - self.due(self.stream.seq + 1))

    def step(self, now: float) -> int:
        """How many events to hand out next: whole chunks when unpaced or catching up,
        else about a fiftieth of a second's worth at the target rate."""
        target = self.target(now)
        if target is None or self.behind(now) > CATCH_UP:
            return CHUNK
        return max(1, min(CHUNK, int(target // STEPS_PER_SECOND)))

    async def wait(self, upto: int, stopping: asyncio.Event, deadline: float | None) -> bool:
        """Wait until event ``upto`` is due; False when cut short (a stop, the deadline)."""
        if not self.paced:
            return True
        loop = asyncio.get_running_loop()
        due, now = self.due(upto), loop.time()
        if now >= due:
            return True
        until = due if deadline is None else min(due, deadline)
        if until - now < CATCH_UP:
            await asyncio.sleep(max(0.0, until - now))
        else:  # a long wait (a quiet hour): a stop must not wait for it
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), until - now)
        return loop.time() >= due
