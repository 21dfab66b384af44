"""The Snowflake benchmark's model: its arithmetic, and a short run of it."""

from __future__ import annotations

import pytest

from service.bench import snowflake as bench


def test_steady_rate_counts_full_batches_between_first_and_last_commit() -> None:
    """Two workers, a batch of 100 every second each, a partial tail: 200 events/s."""
    commits = [(float(t), w, 100, 5) for w in (0, 1) for t in range(1, 6)]
    commits += [(5.5, 0, 30, 4)]  # a partial last batch: not steady state
    assert bench.steady_rate(commits, 100) == pytest.approx(200.0)


def test_model_reaches_most_of_its_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short run with 30 ms round trips: the pipeline keeps the round-trip-bound sink busy."""
    monkeypatch.setattr(bench, "ROUND_TRIP", 0.03)
    row = bench.model_run(2, 300, batches_per_worker=6)
    assert row.events == 2 * 300 * 6
    assert (
        3 <= row.trips_per_batch <= 5
    )  # INSERT, UPDATE, DELETE (when any), checkpoint UPDATE, COMMIT
    assert row.ceiling == pytest.approx(2 * 300 / (row.trips_per_batch * 0.03))
    assert row.share > 0.5
