"""Watching a run: what the dashboard and the commands read while the service writes.

:class:`Watch` is started by the runner once the target is open and stopped
before it closes. It owns

- the per-second :mod:`telemetry` ring and the task that samples it (with the
  traffic profile's target rate, read from the producer's pace);
- :class:`WarehouseView`: ``orders_aggregated`` and the task history, read
  through a session of the service's own at the refresh cadence (after each
  local refresh, and every ``CDC_REFRESH_INTERVAL`` seconds in any case), so a
  dashboard costs the warehouse nothing per page view;
- the threads reads run on: two of their own, so a slow query never holds up
  the pipeline (whose workers have threads of their own) or the event loop;
- the note beside the DuckDB file that lets commands find the service.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .. import logs
from ..config import Settings
from ..pipeline.simclock import iso
from ..sinks.base import Sink, SinkError, SqlSession, Warehouse
from . import discovery, reads, telemetry
from .metrics import Metrics, Stats

if TYPE_CHECKING:
    from ..pipeline.pace import Reading

log = logs.get("watch")

T = TypeVar("T")
READ_THREADS = 2
#: Seconds a stop waits for reads in flight (a DuckDB query is interrupted at once; a
#: verify's replay cannot be, and must not eat the drain's time limit).
STOP_WAIT = 5.0
#: How much less CPU priority the read threads take than the pipeline's (Linux nice).
READ_NICE = 10
VIEW_POLL = 1.0  # seconds between looks at the refresh counter


class NotServing(SinkError):
    """The service is starting or stopping: reads are not taken (HTTP 503)."""


class Watch:
    def __init__(
        self,
        sink: Sink,
        settings: Settings,
        stats: Stats,
        metrics: Metrics,
        queue_depth: Callable[[], int],
        traffic: Callable[[], Reading | None] = lambda: None,
    ) -> None:
        self.sink, self.settings = sink, settings
        self.stats, self.metrics = stats, metrics
        self.queue_depth = queue_depth
        self.traffic = traffic
        self.telemetry = telemetry.Telemetry()
        self.view = WarehouseView(self, settings.refresh_interval)
        self._executor: ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._active: set[SqlSession] = set()
        self._lock = threading.Lock()
        self._noted: Path | None = None  # the DuckDB file whose note this service wrote

    async def start(self, url: str, duckdb_path: Path | None) -> None:
        """Start sampling and reading; on a DuckDB file, leave the note that points to ``url``."""
        self._executor = ThreadPoolExecutor(
            READ_THREADS, thread_name_prefix="cdc-read", initializer=_lower_priority
        )
        s, m = self.stats, self.metrics
        self._tasks = [
            asyncio.ensure_future(
                telemetry.run(self.telemetry, s, m, self.queue_depth, target=self._target)
            ),
            asyncio.ensure_future(self.view.run()),
        ]
        if duckdb_path is not None:
            try:
                note = discovery.write(duckdb_path, url)
                self._noted = duckdb_path
                log.info("watch.discoverable", note=str(note), url=url)
            except OSError as exc:
                log.warning("watch.no_note", path=str(duckdb_path), error=exc.strerror)

    async def stop(self) -> None:
        """Stop taking reads, interrupt the ones running, and wait for their threads."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
        executor, self._executor = self._executor, None
        if executor is None:
            return
        with self._lock:
            for session in list(self._active):
                con = reads.duck_cursor(session)
                if con is not None:
                    with contextlib.suppress(Exception):
                        con.interrupt()
        try:
            await asyncio.wait_for(asyncio.to_thread(executor.shutdown, True), STOP_WAIT)
        except TimeoutError:
            log.warning("watch.reads_abandoned", waited_s=STOP_WAIT)
        await asyncio.to_thread(self.view.close)

    def forget(self) -> None:
        """Remove the note (after the target is closed: until then commands wait, then open it)."""
        if self._noted is not None:
            discovery.remove(self._noted)
            self._noted = None

    @property
    def serving(self) -> bool:
        return self._executor is not None

    async def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` on a read thread; never on the loop."""
        executor = self._executor
        if executor is None:
            raise NotServing("the service is not serving reads (starting or stopping)")
        return await asyncio.get_running_loop().run_in_executor(executor, fn)

    async def read(self, fn: Callable[[SqlSession], T], session: SqlSession | None = None) -> T:
        """``fn`` on a new session (or on ``session``, left open) on a read thread."""
        return await self.call(lambda: self._on_thread(fn, session))

    def _on_thread(self, fn: Callable[[SqlSession], T], given: SqlSession | None) -> T:
        session = given or self.sink.connect_sql(timeout=self.settings.query_timeout)
        with self._lock:
            self._active.add(session)
        try:
            return fn(session)
        except Exception:
            if self._executor is None:  # interrupted by a stop: the caller may retry
                raise NotServing("the service is stopping") from None
            raise
        finally:
            with self._lock:
                self._active.discard(session)
            if given is None:
                with contextlib.suppress(Exception):
                    session.close()

    def _target(self) -> float | None:
        now = self.traffic()
        return None if now is None else now.target

    def live(self) -> dict[str, Any]:
        """What ``/api/live`` sends: the series and the figures of the moment."""
        st = self.stats
        now = time.monotonic()
        last = self.telemetry.latest()
        refreshed = self.view.last_refresh
        return {
            "target": self.sink.name,
            "events_per_s": None if last is None else round(last.events, 1),
            "queue_depth": self.queue_depth(),
            "apply_ms": None if last is None or last.apply_ms is None else round(last.apply_ms, 2),
            "since_commit_s": round(now - st.last_commit, 1) if st.last_commit else None,
            "since_refresh_s": None
            if refreshed is None
            else round((dt.datetime.now(dt.UTC) - refreshed).total_seconds(), 1),
            "applied_total": st.applied_total,
            "generated_total": st.generated_total,
            "batches": st.batches,
            "uptime_s": round(st.elapsed(), 1),
            "traffic": _traffic(self.traffic()),
            "series": self.telemetry.series(),
        }


def _traffic(now: Reading | None) -> dict[str, Any] | None:
    """The profile's figures of the moment, for ``/api/live``."""
    if now is None:
        return None
    return {
        "profile": now.profile,
        "rate": now.rate,
        "target_per_s": None if now.target is None else round(now.target, 1),
        "multiplier": round(now.multiplier, 3),
        "simulated_at": None if now.simulated is None else iso(now.simulated),
        "behind_s": round(now.behind, 2),
        "time_scale": None if now.scale is None else round(now.scale, 3),
    }


def _lower_priority() -> None:
    """This read thread yields the CPU to the pipeline's threads (Linux: nice is per thread)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), READ_NICE)


class WarehouseView:
    """orders_aggregated and the task history as last read, with when and any error."""

    def __init__(self, watch: Watch, interval: float) -> None:
        self._watch = watch
        self.interval = interval
        self.aggregated: reads.Rows | None = None
        self.tasks: reads.Rows | None = None
        self.read_at: float | None = None  # Unix time
        self.error: str | None = None
        self.last_refresh: dt.datetime | None = None  # UTC, aware
        self._session: SqlSession | None = None

    def _refreshes(self) -> float:
        get = self._watch.metrics.registry.get_sample_value
        return sum(
            get("cdc_refresh_runs_total", {"state": s}) or 0 for s in ("SUCCEEDED", "FAILED")
        )

    async def run(self) -> None:
        """Read now, after each local refresh, and every ``interval`` seconds."""
        if self._watch.sink.warehouse is Warehouse.NONE:
            return
        loop = asyncio.get_running_loop()
        seen, due = -1.0, 0.0
        while True:
            runs = self._refreshes()
            if runs != seen or loop.time() >= due:
                await self._read()
                seen, due = runs, loop.time() + self.interval
            await asyncio.sleep(VIEW_POLL)

    async def _read(self) -> None:
        local = self._watch.sink.warehouse is Warehouse.LOCAL
        try:
            if self._session is None:
                timeout = self._watch.settings.query_timeout
                self._session = await self._watch.call(
                    lambda: self._watch.sink.connect_sql(timeout=timeout)
                )
            aggregated, tasks = await self._watch.read(
                lambda s: (reads.aggregated(s), reads.tasks(s, local, 20)), self._session
            )
        except NotServing:
            return
        except Exception as exc:
            self.error = logs.one_line(exc)
            log.warning("watch.view_failed", error=self.error)
            await asyncio.to_thread(self.close)  # a new session next time
            return
        self.aggregated, self.tasks, self.error = aggregated, tasks, None
        self.read_at = time.time()
        if not self._watch.sink.keep_sessions:
            await asyncio.to_thread(self.close)
        self.last_refresh = last_success(tasks) or self.last_refresh

    def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                session.close()


def last_success(tasks: reads.Rows) -> dt.datetime | None:
    """When the task last succeeded (UTC), from its history."""
    if "state" not in tasks.columns or "completed_time" not in tasks.columns:
        return None
    state, done = tasks.columns.index("state"), tasks.columns.index("completed_time")
    times = [r[done] for r in tasks.rows if r[state] == "SUCCEEDED" and r[done] is not None]
    if not times:
        return None
    aware: list[dt.datetime] = [t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in times]
    return max(aware).astimezone(dt.UTC)
