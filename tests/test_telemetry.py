"""The dashboard's series: rates from the run's counters, in a ring that does not grow."""

from __future__ import annotations

from service.pipeline.events import Op
from service.watch.metrics import Metrics, Stats
from service.watch.telemetry import Telemetry


def _commit(stats: Stats, metrics: Metrics, inserts: int, updates: int, seconds: float) -> None:
    stats.applied[Op.INSERT] += inserts
    stats.applied[Op.UPDATE] += updates
    metrics.apply_seconds += seconds
    metrics.apply_batches += 1


def test_rates_and_apply_time_come_from_counter_deltas() -> None:
    """Events/s by operation and the mean apply time are taken across the samples' window."""
    stats, metrics, ring = Stats(), Metrics(), Telemetry(smooth=2)
    ring.sample(stats, metrics, queue=0, now=100.0)
    assert ring.latest() is None  # a rate needs two readings
    _commit(stats, metrics, 300, 100, 0.020)
    ring.sample(stats, metrics, queue=7, now=101.0)
    first = ring.latest()
    assert first is not None
    assert (first.inserts, first.updates, first.deletes, first.queue) == (300, 100, 0, 7)
    assert first.apply_ms is not None and round(first.apply_ms, 6) == 20.0
    ring.sample(stats, metrics, queue=0, now=102.0)  # a second with no commit
    quiet = ring.latest()
    assert quiet is not None and quiet.inserts == 150 and quiet.apply_ms == 20.0  # over 2 s
    ring.sample(stats, metrics, queue=0, now=103.0)
    idle = ring.latest()
    assert idle is not None and idle.events == 0 and idle.apply_ms is None


def test_the_ring_is_bounded() -> None:
    """However long the run, the ring holds its capacity and the newest samples."""
    stats, metrics, ring = Stats(), Metrics(), Telemetry(capacity=50)
    for t in range(10_000):
        _commit(stats, metrics, 10, 0, 0.001)
        ring.sample(stats, metrics, queue=t, now=float(t), target=t / 2)
    assert len(ring.samples) == 50
    series = ring.series()
    assert len(series["at"]) == 50 and series["queue"][-1] == 9_999
    assert set(series) == {"at", "insert", "update", "delete", "queue", "apply_ms", "target"}
    assert series["target"][-1] == 4_999.5  # the traffic profile's target of the moment
