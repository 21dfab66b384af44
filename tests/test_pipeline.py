"""The pipeline end to end on the embedded default: the table equals the replay of the stream."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from service.pipeline.generator import replay
from service.runner import Service

from .conftest import START, cli, config, identity
from .helpers import duckdb_checkpoints, duckdb_rows


def run_service(**flags: Any) -> Service:
    service = Service(config(**flags))
    asyncio.run(service.run())
    return service


def summary(stdout: str) -> dict[str, object]:
    lines = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]
    return next(x for x in lines if x["event"] == "pipeline.summary")


@pytest.mark.slow
def test_cli_200k_events_equal_the_replay(db: Path) -> None:
    """The issue's command: 200,000 events, seed 7; raw_orders equals the in-memory replay."""
    r = cli("run", "--events", "200000", "--seed", "7", "--start", START, "--duckdb-path", str(db))
    assert r.returncode == 0, r.stderr
    s = summary(r.stdout)
    assert s["applied_total"] == s["generated_total"] == 200_000
    assert duckdb_rows(db) == replay(identity(), 200_000)


@pytest.mark.parametrize(
    ("workers", "batch_size", "flush_interval"),
    [(1, 1000, 1.0), (3, 777, 0.01), (8, 20_000, 0.2), (16, 64, 1.0)],
)
def test_any_worker_count_and_batch_size_give_the_identical_table(
    tmp_path: Path, workers: int, batch_size: int, flush_interval: float
) -> None:
    """Worker count, batch size and flush interval change nothing in the result."""
    db = tmp_path / "t.duckdb"
    n = 40_000
    service = run_service(
        events=n,
        workers=workers,
        batch_size=batch_size,
        flush_interval=flush_interval,
        duckdb_path=str(db),
        target="duckdb",
    )
    assert service.stats.applied_total == n
    assert duckdb_rows(db) == replay(identity(), n)
    ckpts = duckdb_checkpoints(db)
    assert len(ckpts) == 64 and max(ckpts.values()) == n


def test_a_bounded_rerun_applies_nothing_twice(db: Path) -> None:
    """The same command twice: the second run skips everything the checkpoints hold."""
    first = run_service(events=20_000, duckdb_path=str(db), target="duckdb")
    second = run_service(events=30_000, duckdb_path=str(db), target="duckdb")
    assert first.stats.applied_total == 20_000
    assert second.stats.skipped == 20_000 and second.stats.applied_total == 10_000
    assert duckdb_rows(db) == replay(identity(), 30_000)


def test_another_stream_is_refused_unless_reset(db: Path) -> None:
    """A different seed on a target holding a stream exits 2 naming both; --reset starts over."""
    assert (
        cli(
            "run", "--events", "2000", "--seed", "7", "--start", START, "--duckdb-path", str(db)
        ).returncode
        == 0
    )
    r = cli("run", "--events", "2000", "--seed", "8", "--start", START, "--duckdb-path", str(db))
    assert r.returncode == 2
    assert "seed 7 (stored) != 8 (asked)" in r.stderr and "--reset" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = cli(
        "run",
        "--events",
        "2000",
        "--seed",
        "8",
        "--start",
        START,
        "--duckdb-path",
        str(db),
        "--reset",
    )
    assert r.returncode == 0, r.stderr
    assert duckdb_rows(db) == replay(identity(seed=8), 2000)


def test_start_defaults_to_the_stored_stream(db: Path) -> None:
    """Without --start, a rerun resumes the stored stream instead of starting a new 'now'."""
    r1 = cli("run", "--events", "3000", "--duckdb-path", str(db))
    r2 = cli("run", "--events", "6000", "--duckdb-path", str(db))
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    assert summary(r2.stdout)["skipped"] == 3000


def test_a_resume_fast_forwards_to_the_lowest_checkpoint_then_routes(db: Path) -> None:
    """Up to the lowest checkpoint the stream is drawn without routing; past it, event by event
    against each partition's checkpoint. With 3 workers the checkpoints differ."""
    args = ("run", "--seed", "7", "--start", START, "--duckdb-path", str(db), "--workers", "3")
    assert cli(*args, "--events", "25000").returncode == 0
    ckpts = duckdb_checkpoints(db)
    assert min(ckpts.values()) < max(ckpts.values()) == 25_000
    r = cli(*args, "--events", "40000")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    forwarded = next(x for x in lines if x["event"] == "producer.fast_forwarded")
    assert forwarded["to_seq"] == min(ckpts.values())
    assert summary(r.stdout)["skipped"] == 25_000
    assert duckdb_rows(db) == replay(identity(), 40_000)
