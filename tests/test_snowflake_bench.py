"""The Snowflake benchmark's model: its arithmetic, and a short run of it."""

from __future__ import annotations

import pytest

from service.bench import snowflake as bench


def test_steady_rate_counts_full_batches_between_first_and_last_commit() -> None:
    """Two workers, a batch of 100 every second each, a partial tail: 200 events/s."""
    commits = [(float(t), w, 100, 5) for w in (0, 1) for t in range(1, 6)]
    commits += [(5.5, 0, 30, 4)]  # a partial last batch: not steady state
    assert bench.steady_rate(commits, 100) == pytest.approx(200.0)


def test_model_reaches_most_of_its_lock_aware_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """A short run with 30 ms round trips: the pipeline keeps the round-trip-bound sink busy, and
    the locks hold it to the serial part: four workers do not go four times one's speed."""
    monkeypatch.setattr(bench, "ROUND_TRIP", 0.03)
    one = bench.model_run(1, 300, batches_per_worker=6)
    four = bench.model_run(4, 300, batches_per_worker=6)
    assert four.events == 4 * 300 * 6
    # INSERT, MERGE (updates and deletes, when any), checkpoint UPDATE, COMMIT
    assert 3 <= four.trips_per_batch <= 4
    # From the MERGE (or the checkpoint, without one) to the COMMIT.
    assert 2 <= four.locked_per_batch <= 3
    assert four.ceiling == pytest.approx(300 / (four.locked_per_batch * 0.03))
    assert four.unlocked_ceiling > 2 * four.ceiling
    assert one.share > 0.5 and four.share > 0.5
    assert four.steady_rate < 2 * one.steady_rate, "the locked parts queue behind each other"
