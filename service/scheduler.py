"""The refresh task where the target has none: the schedule, and its history.

On Snowflake the task ``refresh_orders_agg`` of ``sql/`` refreshes the
dynamic tables every two minutes. Locally (DuckDB, the emulator) the service
plays it: every ``CDC_REFRESH_INTERVAL`` seconds, on schedule, it rebuilds the
layers (:func:`service.warehouse.materialize`) and records the run in
``cdc_task_history``, the local ``TASK_HISTORY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import clock, logs, sqlfiles, warehouse
from .metrics import Metrics
from .sinks.base import Sink, SqlSession, Warehouse

log = logs.get("warehouse")

TASK = "REFRESH_ORDERS_AGG"
HISTORY_TABLE = "cdc_task_history"
CANCEL_WAIT = 10.0  # seconds a cancelled scheduler waits for the refresh in flight
HISTORY_COLUMNS = (
    "name",
    "scheduled_time",
    "query_start_time",
    "completed_time",
    "state",
    "error_message",
    "rows_written",
)
_RECORD_SQL = (
    "INSERT INTO cdc_task_history (name, scheduled_time, query_start_time, completed_time, "
    "state, error_message, rows_written) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Run:
    """One run of the (local) task, as recorded in ``cdc_task_history``."""

    name: str
    scheduled: dt.datetime
    started: dt.datetime
    completed: dt.datetime
    state: str  # SUCCEEDED or FAILED, as in TASK_HISTORY
    error: str | None
    rows: int | None


def record(session: SqlSession, run: Run) -> None:
    session.execute(
        _RECORD_SQL,
        (run.name, run.scheduled, run.started, run.completed, run.state, run.error, run.rows),
    )


def history_sql(local: bool, limit: int = 100) -> str:
    """The task's last ``limit`` runs, oldest first: local history table, or TASK_HISTORY."""
    cols = ", ".join(HISTORY_COLUMNS)
    if local:
        return (
            f"SELECT {cols} FROM (SELECT {cols} FROM {HISTORY_TABLE} "  # noqa: S608 (constants)
            f"ORDER BY scheduled_time DESC LIMIT {int(limit)}) AS h ORDER BY scheduled_time"
        )
    cols = ", ".join(HISTORY_COLUMNS[:-1])
    return (
        f"SELECT {cols} FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY("  # noqa: S608 (constants)
        f"TASK_NAME => '{TASK}', RESULT_LIMIT => {int(limit)})) ORDER BY scheduled_time"
    )


def history(
    session: SqlSession, local: bool, limit: int = 100
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names (lower case) and rows of the task's history."""
    cur = session.execute(history_sql(local, limit))
    return [d[0].lower() for d in cur.description], [tuple(r) for r in cur.fetchall()]


def run_task(connect: Callable[[], SqlSession], scheduled: dt.datetime) -> Run:
    """One run of the local task on its own session: refresh, then record the outcome.

    A failure is recorded (and returned), never raised: the schedule goes on.
    """
    started = clock.utc_now()
    session = None
    rows: int | None = None
    error: str | None = None
    try:
        session = connect()
        rows = warehouse.materialize(session)
    except Exception as exc:
        error = logs.one_line(exc)
    state = "FAILED" if error else "SUCCEEDED"
    run = Run(TASK, scheduled, started, clock.utc_now(), state, error, rows)
    try:
        if session is not None:
            record(session, run)
    except Exception as exc:
        log.error("warehouse.history_failed", error=logs.one_line(exc))
    finally:
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()
    return run


async def run_schedule(
    connect: Callable[[], SqlSession], interval: float, metrics: Metrics | None = None
) -> None:
    """Play the task every ``interval`` seconds until cancelled.

    Runs keep to the schedule (the n-th is due at start + n x interval, however
    long the ones before took); a slot that passes while a run is still busy is
    skipped, as Snowflake skips a task run that would overlap the last one.
    """
    loop = asyncio.get_running_loop()
    mono0, wall0 = loop.time(), clock.utc_now()
    n = 1
    while True:
        due = mono0 + n * interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        scheduled = wall0 + dt.timedelta(seconds=n * interval)
        work = asyncio.ensure_future(asyncio.to_thread(run_task, connect, scheduled))
        try:
            run = await asyncio.shield(work)
        except asyncio.CancelledError:
            # Let the refresh in flight finish and close its connection before the caller
            # closes the sink under it (bounded: a shutdown has a time limit).
            with contextlib.suppress(BaseException):
                _count(await asyncio.wait_for(work, CANCEL_WAIT), metrics)
            raise
        _count(run, metrics)
        behind = int((loop.time() - mono0) // interval)
        if behind > n:
            log.warning("warehouse.refresh_skipped", runs=behind - n, interval_s=interval)
        n = max(n + 1, behind + 1)


def _count(run: Run, metrics: Metrics | None) -> None:
    if metrics is not None:
        metrics.refresh_runs.labels(state=run.state).inc()
    fields = {
        "task": run.name,
        "state": run.state,
        "scheduled": run.scheduled.isoformat(),
        "seconds": round((run.completed - run.started).total_seconds(), 3),
        "rows": run.rows,
    }
    if run.error:
        log.error("warehouse.refresh", error=run.error, **fields)
    else:
        log.info("warehouse.refresh", **fields)


# -- the runner's entry points ----------------------------------------------------


def refresh_now(sink: Sink, metrics: Metrics | None = None) -> Run | None:
    """One refresh right now. Locally it is a run of the task (recorded); on Snowflake, None."""
    if sink.warehouse is Warehouse.NONE:
        return None
    if sink.warehouse is Warehouse.LOCAL:
        run = run_task(sink.connect_sql, clock.utc_now())
        _count(run, metrics)
        return run
    session = sink.connect_sql()
    try:
        session.execute(sqlfiles.refresh_statement())
    finally:
        session.close()
    return None


async def schedule(sink: Sink, interval: float, metrics: Metrics) -> None:
    """Refresh the layers every ``interval`` seconds where the target has no task of its own."""
    if sink.warehouse is not Warehouse.LOCAL:
        return  # Snowflake: the task refresh_orders_agg does it; null: nothing to refresh
    await run_schedule(sink.connect_sql, interval, metrics)
