"""The local task: the scheduler refreshes on time, records every run, survives failures."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pytest

from service.config import Names
from service.pipeline.generator import replay
from service.sinks.base import Warehouse
from service.sinks.duckdb import DuckSession
from service.sinks.null import NullSink
from service.warehouse import layers, scheduler
from service.watch.metrics import Metrics

from .conftest import cli, identity
from .test_warehouse import load_duckdb

INTERVAL = 0.3


def _target(path: Path | str = ":memory:") -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    load_duckdb(con, replay(identity(), 3_000))
    layers.apply_ddl(DuckSession(con), Warehouse.LOCAL, Names())
    return con


async def _run_for(
    seconds: float,
    connect: Any,
    metrics: Metrics,
    interval: float = INTERVAL,
    during: Sequence[tuple[float, Any]] = (),
) -> None:
    task = asyncio.ensure_future(
        scheduler.run_schedule(scheduler.sessions(connect), interval, metrics)
    )
    t0 = time.monotonic()
    for at, action in during:
        await asyncio.sleep(max(0.0, at - (time.monotonic() - t0)))
        action()
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - t0)))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _runs(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, ...]]:
    return con.execute(scheduler.history_sql(local=True)).fetchall()


def _count(metrics: Metrics, state: str) -> float:
    return metrics.registry.get_sample_value("cdc_refresh_runs_total", {"state": state}) or 0.0


def test_scheduler_keeps_to_the_schedule_when_refreshes_take_time() -> None:
    """Runs are due at start + n x interval: a slow refresh (0.1 s) does not push the next one."""
    con = _target()
    metrics = Metrics()

    def slow_connect() -> DuckSession:
        time.sleep(0.1)
        return DuckSession(con.cursor())

    began = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    # Twice the interval: a refresh (0.1 s slept, and its own work: 0.16-0.26 s on a loaded
    # machine) must fit in one, or the next run is skipped as it should be.
    interval = 2 * INTERVAL
    asyncio.run(_run_for(4 * interval + 0.15, slow_connect, metrics, interval))
    runs = _runs(con)
    assert [r[4] for r in runs] == ["SUCCEEDED"] * 4  # at 0.6, 1.2, 1.8, 2.4 s (drift: 3)
    scheduled = [r[1] for r in runs]
    for n, at in enumerate(scheduled, start=1):
        offset = (at - began).total_seconds()
        assert abs(offset - n * interval) < 0.05, (n, offset)
    for r in runs:
        started, completed = r[2], r[3]
        assert dt.timedelta(0) <= started - r[1] < dt.timedelta(seconds=0.08), "started on time"
        assert completed - started >= dt.timedelta(seconds=0.1)
    assert len({r[6] for r in runs}) == 1 and runs[0][6] > 0, "rows written, every run alike"
    assert _count(metrics, "SUCCEEDED") == 4 and _count(metrics, "FAILED") == 0


def test_a_failed_refresh_is_recorded_and_the_schedule_goes_on(db: Path) -> None:
    """raw_orders renamed away: the runs fail with the error recorded; renamed back, they succeed.

    ``ecomm-cdc tasks`` then shows every run, the FAILED ones with their error.
    """
    con = _target(db)
    metrics = Metrics()
    rows_before = _runs(con)
    assert rows_before == []

    def break_it() -> None:
        con.execute("ALTER TABLE raw_orders RENAME TO raw_orders_away")

    def mend_it() -> None:
        con.execute("ALTER TABLE raw_orders_away RENAME TO raw_orders")

    # Runs at 0.3 (ok), 0.6 and 0.9 (raw_orders missing), 1.2 (ok again).
    asyncio.run(
        _run_for(
            4 * INTERVAL + 0.15,
            lambda: DuckSession(con.cursor()),
            metrics,
            during=[(0.45, break_it), (1.05, mend_it)],
        )
    )
    runs = _runs(con)
    assert [r[4] for r in runs] == ["SUCCEEDED", "FAILED", "FAILED", "SUCCEEDED"]
    failed = runs[1]
    assert "raw_orders" in failed[5] and "does not exist" in failed[5]
    assert failed[6] is None and runs[3][6] == runs[0][6]
    assert (_count(metrics, "SUCCEEDED"), _count(metrics, "FAILED")) == (2, 2)
    # The layers kept what the last good refresh wrote while the refreshes failed.
    con.close()

    shown = cli("tasks", "--target", "duckdb", "--duckdb-path", str(db))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "REFRESH_ORDERS_AGG" in out and "cdc_task_history" in out
    assert out.count("FAILED") == 2 + 1  # two runs, and the summary line
    assert "does not exist" in out
    assert "4 runs: 2 FAILED, 2 SUCCEEDED" in out


def test_cancelling_waits_for_the_refresh_in_flight() -> None:
    """Cancelled mid-refresh, the scheduler lets the run finish and record before it goes."""
    con = _target()

    def slow_connect() -> DuckSession:
        time.sleep(0.4)
        return DuckSession(con.cursor())

    async def main() -> None:
        task = asyncio.ensure_future(
            scheduler.run_schedule(scheduler.sessions(slow_connect), 0.1, None)
        )
        await asyncio.sleep(0.25)  # the first run is in its 0.4 s connect
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert [r[4] for r in _runs(con)] == ["SUCCEEDED"]


def test_schedule_leaves_snowflake_to_its_task() -> None:
    """Where the warehouse is real (Snowflake), schedule returns at once: the task refreshes."""

    class Remote(NullSink):
        name = "snowflake"
        warehouse = Warehouse.DYNAMIC

        def connect_sql(self, timeout: float | None = None) -> Any:
            raise AssertionError("no connection is needed")

    asyncio.run(asyncio.wait_for(scheduler.schedule(Remote(), 0.01, Metrics()), 1.0))
