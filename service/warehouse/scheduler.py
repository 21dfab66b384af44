"""The refresh task where the target has none: the schedule, and its history.

On Snowflake the task ``refresh_orders_agg`` of ``sql/`` refreshes the
dynamic tables every two minutes. Locally (DuckDB, the emulator) the service
plays it: every ``CDC_REFRESH_INTERVAL`` seconds, on schedule, it rebuilds the
layers (:func:`service.warehouse.layers.materialize`) and records the run in
``cdc_task_history``, the local ``TASK_HISTORY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .. import clock, logs, threads
from ..retry import Phase
from ..sinks.base import Sink, SinkError, SqlSession, Warehouse
from ..watch.metrics import Metrics
from . import layers, sqlfiles

T = TypeVar("T")

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
    """The task's last ``limit`` runs, oldest first: local history table, or TASK_HISTORY
    (where Snowflake also lists the next scheduled run: ``query_id IS NULL``, not a run)."""
    cols = ", ".join(HISTORY_COLUMNS)
    if local:
        return (
            f"SELECT {cols} FROM (SELECT {cols} FROM {HISTORY_TABLE} "  # noqa: S608 (constants)
            f"ORDER BY scheduled_time DESC LIMIT {int(limit)}) AS h ORDER BY scheduled_time"
        )
    cols = ", ".join(HISTORY_COLUMNS[:-1])
    return (
        f"SELECT {cols} FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY("  # noqa: S608 (constants)
        f"TASK_NAME => '{TASK}', RESULT_LIMIT => {int(limit)})) WHERE query_id IS NOT NULL "
        "ORDER BY scheduled_time"
    )


def refreshes_sql(names: list[str], limit: int = 100) -> str:
    """The dynamic tables' last refreshes (Snowflake), oldest first, each with its action:
    FULL, INCREMENTAL or NO_DATA ("DYNAMIC_TABLE_REFRESH_HISTORY")."""
    wanted = ", ".join(f"'{n.upper()}'" for n in names)  # names of sql/: identifiers
    source = (
        f"TABLE(INFORMATION_SCHEMA.DYNAMIC_TABLE_REFRESH_HISTORY(RESULT_LIMIT => {int(limit)}))"
    )
    return (
        "SELECT name, refresh_action, refresh_trigger, state, state_message, "  # noqa: S608
        f"refresh_start_time, refresh_end_time FROM {source} WHERE name IN ({wanted}) "
        "ORDER BY refresh_start_time"
    )


def history(
    session: SqlSession, local: bool, limit: int = 100
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names (lower case) and rows of the task's history. On Snowflake each run says
    what it did to each dynamic table (``refreshes``), and refreshes no run made (a target lag,
    a manual refresh, the creation) are rows of their own."""
    cur = session.execute(history_sql(local, limit))
    columns = [d[0].lower() for d in cur.description]
    runs = [tuple(r) for r in cur.fetchall()]
    if local:
        return columns, runs
    try:
        cur = session.execute(refreshes_sql([t.name for t in sqlfiles.layers()], limit))
        names = [d[0].lower() for d in cur.description]
        done = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    except Exception as exc:  # a role that may not read it: the runs, without their actions
        log.warning("warehouse.refresh_history_unread", error=logs.one_line(exc))
        return columns, runs
    return _with_refreshes(columns, runs, done, limit)


def _with_refreshes(
    columns: list[str], runs: list[tuple[Any, ...]], done: list[dict[str, Any]], limit: int
) -> tuple[list[str], list[tuple[Any, ...]]]:
    start, end = columns.index("query_start_time"), columns.index("completed_time")
    acts: list[list[str]] = [[] for _ in runs]
    alone: list[tuple[Any, ...]] = []
    for r in done:
        what = f"{str(r['name']).lower()} {r['refresh_action']}"
        t = r["refresh_start_time"]
        owner = next(
            (
                i
                for i, run in enumerate(runs)
                if run[start] is not None and t is not None and run[start] <= t
                and (run[end] is None or t <= run[end])
            ),
            None,
        )  # fmt: skip
        if owner is not None:
            acts[owner].append(what)
            continue
        fields = {
            "name": f"{str(r['name']).upper()} ({str(r['refresh_trigger']).lower()})",
            "scheduled_time": t,
            "query_start_time": t,
            "completed_time": r["refresh_end_time"],
            "state": r["state"],
            "error_message": r["state_message"],
        }
        alone.append((*(fields.get(c) for c in columns), what))
    rows = [(*run, ", ".join(a) or None) for run, a in zip(runs, acts, strict=True)] + alone
    rows.sort(key=lambda row: row[columns.index("scheduled_time")] or dt.datetime.min)
    return [*columns, "refreshes"], rows[-limit:]


class Sessions(Protocol):
    """Runs ``fn`` on a session of the target (``Sink.run``: retried where it is remote)."""

    def __call__(self, fn: Callable[[SqlSession], T], doing: str, phase: Phase) -> T: ...


class _Plain:
    def __init__(self, connect: Callable[[], SqlSession]) -> None:
        self._connect = connect

    def __call__(self, fn: Callable[[SqlSession], T], doing: str, phase: Phase) -> T:
        session = self._connect()
        try:
            return fn(session)
        finally:
            with contextlib.suppress(Exception):
                session.close()


def sessions(connect: Callable[[], SqlSession]) -> Sessions:
    """Sessions from ``connect``, one per call, not retried."""
    return _Plain(connect)


def run_task(run: Sessions, scheduled: dt.datetime) -> Run:
    """One run of the local task: refresh (retried as the target's policy says), then record
    the outcome. A failure is recorded (and returned), never raised: the schedule goes on."""
    started = clock.utc_now()
    rows: int | None = None
    error: str | None = None
    try:
        rows = run(layers.materialize, "refreshing the warehouse layers", Phase.REFRESH)
    except Exception as exc:
        error = logs.one_line(exc) if not isinstance(exc, SinkError) else str(exc)
    state = "FAILED" if error else "SUCCEEDED"
    done = Run(TASK, scheduled, started, clock.utc_now(), state, error, rows)
    try:
        run(lambda session: record(session, done), "recording the refresh", Phase.REFRESH)
    except Exception as exc:
        log.error("warehouse.history_failed", error=logs.one_line(exc))
    return done


async def run_schedule(run: Sessions, interval: float, metrics: Metrics | None = None) -> None:
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
        work = threads.run(run_task, run, scheduled, name="cdc-refresh")
        try:
            done = await asyncio.shield(work)
        except asyncio.CancelledError:
            # Let the refresh in flight finish and close its connection before the caller
            # closes the sink under it (bounded: a shutdown has a time limit).
            with contextlib.suppress(BaseException):
                _count(await asyncio.wait_for(work, CANCEL_WAIT), metrics)
            raise
        _count(done, metrics)
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
        done = run_task(sink.run, clock.utc_now())
        _count(done, metrics)
        return done
    sink.run(
        lambda session: session.execute(sqlfiles.refresh_statement()),
        "refreshing the dynamic tables",
        Phase.REFRESH,
    )
    return None


async def schedule(sink: Sink, interval: float, metrics: Metrics) -> None:
    """Refresh the layers every ``interval`` seconds where the target has no task of its own."""
    if sink.warehouse is not Warehouse.LOCAL:
        return  # Snowflake: the task refresh_orders_agg does it; null: nothing to refresh
    await run_schedule(sink.run, interval, metrics)
