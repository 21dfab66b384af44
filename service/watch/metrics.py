"""Counters of one run: Prometheus metrics for /metrics, plain numbers for the logs.

Everything is updated per chunk or per batch, never per event: the hot path
stays free of bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..pipeline.events import Batch, Op
from ..retry import Phase

if TYPE_CHECKING:
    from ..pipeline.pace import Reading

OPS = (Op.INSERT, Op.UPDATE, Op.DELETE)


@dataclass
class Stats:
    started: float = field(default_factory=time.monotonic)
    generated: dict[Op, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    applied: dict[Op, int] = field(default_factory=lambda: dict.fromkeys(OPS, 0))
    skipped: int = 0  # regenerated on resume, already held by the target
    from_snapshot: int = 0  # of those, the events a generator snapshot skipped (its seq)
    batches: int = 0
    blocked_seconds: float = 0.0
    retries: int = 0
    last_commit: float = 0.0  # time.monotonic() of the last commit
    streaming_since: float | None = None  # time.monotonic() when the producer started
    startup: float | None = None  # seconds from the process's launch to the producer's start

    @property
    def generated_total(self) -> int:
        return sum(self.generated.values())

    @property
    def applied_total(self) -> int:
        return sum(self.applied.values())

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def streaming(self) -> float:
        """Seconds from the producer's start to the last commit (0: nothing streamed)."""
        if self.streaming_since is None or self.last_commit < self.streaming_since:
            return 0.0
        return self.last_commit - self.streaming_since

    def record_batch(self, batch: Batch, retries: int) -> None:
        """A batch committed."""
        for op, n in batch.counts.items():
            self.applied[op] += n
        self.batches += 1
        self.retries += retries
        self.last_commit = time.monotonic()


class Metrics:
    """The Prometheus side. One registry per run, so tests can run many."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.generated = Counter(
            "cdc_events_generated", "Events put on the queue", ["op"], registry=r
        )
        self.applied = Counter(
            "cdc_events_applied", "Events committed to the target", ["op"], registry=r
        )
        self.queue_depth = Gauge("cdc_queue_depth", "Events waiting in the queues", registry=r)
        self.blocked = Counter(
            "cdc_producer_blocked_seconds", "Time the producer waited on a full queue", registry=r
        )
        self.batch_events = Histogram(
            "cdc_batch_events",
            "Events per applied batch (before collapsing to one change per order)",
            registry=r,
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 25000, 100000),
        )
        self.batch_apply = Histogram(
            "cdc_batch_apply_seconds",
            "Time to apply and commit one batch",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.retries = Counter(
            "cdc_retries", "Remote operations retried, by phase", ["phase"], registry=r
        )
        self.errors = Counter(
            "cdc_errors",
            "Operations that failed for good, by phase and kind (transient: retries ran out)",
            ["phase", "kind"],
            registry=r,
        )
        self.last_commit = Gauge(
            "cdc_last_commit_timestamp_seconds", "Unix time of the last commit", registry=r
        )
        self.refresh_runs = Counter(
            "cdc_refresh_runs", "Refreshes of the warehouse layers", ["state"], registry=r
        )
        self.snapshots = Counter(
            "cdc_snapshots",
            "Generator snapshots: saved, failed, or skipped (the previous save still in flight)",
            ["outcome"],
            registry=r,
        )
        self.snapshot_seq = Gauge(
            "cdc_snapshot_seq",
            "Events covered by the newest saved generator snapshot (a restart regenerates "
            "at most from the newest one every partition has passed)",
            registry=r,
        )
        self.target_rate = Gauge(
            "cdc_traffic_target_events_per_second",
            "Events per second the traffic profile asks for now: --rate times the profile's "
            "multiplier at the simulated clock (0: as fast as possible)",
            registry=r,
        )
        self.multiplier = Gauge(
            "cdc_traffic_multiplier",
            "The traffic profile's multiplier of --rate at the simulated clock (1: steady)",
            registry=r,
        )
        self.simulated = Gauge(
            "cdc_simulated_clock_seconds",
            "Simulated time (Unix seconds) of the newest event generated",
            registry=r,
        )
        self.behind = Gauge(
            "cdc_producer_behind_seconds",
            "Seconds the producer is behind the traffic profile's schedule (it waited on a full "
            "queue and catches up as fast as the queues take events)",
            registry=r,
        )
        #: Plain sums of the apply times, for the dashboard's mean apply time (telemetry.py).
        self.apply_seconds = 0.0
        self.apply_batches = 0
        self._gen = {op: self.generated.labels(op=op.name.lower()) for op in OPS}
        self._app = {op: self.applied.labels(op=op.name.lower()) for op in OPS}
        for state in ("SUCCEEDED", "FAILED"):
            self.refresh_runs.labels(state=state)
        for outcome in ("saved", "failed", "skipped"):
            self.snapshots.labels(outcome=outcome)
        for phase in Phase:  # every series shows from the start, at 0
            self.retries.labels(phase=str(phase))

    def follow(self, reading: Callable[[], Reading | None]) -> None:
        """The traffic gauges read ``reading()`` when scraped (never stale mid-wait)."""

        def reader(pick: Callable[[Reading], float | None]) -> Callable[[], float]:
            def value() -> float:
                now = reading()
                got = None if now is None else pick(now)
                return 0.0 if got is None else got

            return value

        self.target_rate.set_function(reader(lambda r: r.target))
        self.multiplier.set_function(reader(lambda r: r.multiplier))
        self.simulated.set_function(reader(lambda r: r.simulated))
        self.behind.set_function(reader(lambda r: r.behind))

    def count_generated(self, counts: dict[Op, int]) -> None:
        for op, n in counts.items():
            if n:
                self._gen[op].inc(n)

    def retried(self, phase: str) -> None:
        """A remote operation is about to be tried again (``retry.Observer``)."""
        self.retries.labels(phase=str(phase)).inc()

    def failed(self, phase: str, kind: str) -> None:
        """An operation failed for good (``retry.Observer``)."""
        self.errors.labels(phase=str(phase), kind=kind).inc()

    def record_batch(self, batch: Batch, seconds: float) -> None:
        """A batch committed after ``seconds``."""
        for op, n in batch.counts.items():
            if n:
                self._app[op].inc(n)
        self.batch_events.observe(batch.size)
        self.batch_apply.observe(seconds)
        self.apply_seconds += seconds
        self.apply_batches += 1
        self.last_commit.set(time.time())
