"""``ecomm-cdc bench --snowflake``: the Snowflake path, measured two ways in one run.

1. On the emulator (fakesnow, through the real connector over HTTP): the
   seed's way (one statement and one commit per event) against the batched
   sink, same server, same stream, as a ratio. The emulator is slow (its SQL
   goes through sqlglot transforms), so these are small counts; what matters
   is the ratio, and the requests per batch counted at the server.
2. A model of real Snowflake, where a round trip costs ~150 ms whatever it
   carries, and where UPDATE, DELETE and MERGE on a table hold a lock until COMMIT
   that keeps the others from running on that table, while INSERTs take none
   ("Transactions": resource locking): a sink that applies the batch to DuckDB
   underneath, then, for every request the Snowflake writer would send for the
   batch (its statements, from the same builders, and the COMMIT), in order, waits
   150 ms, taking the table's lock first where the statement would. So the
   workers overlap their INSERTs and queue behind each other from a batch's first
   UPDATE to its COMMIT. Its ceiling: ``min(workers x batch / (trips x 150 ms),
   batch / (locked trips x 150 ms))``, where *locked trips* run from the first
   locking statement to the COMMIT. Printed for 1, 2, 4 and 8 workers, with the
   ceiling a model without locks would give beside it.

   The DuckDB time is on top of the 150 ms (so it counts against the pipeline).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gzip
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from .. import logs
from ..config import Config, load
from ..pipeline.events import Batch, Op
from ..pipeline.generator import GeneratorSettings, OrderStream, StreamIdentity
from ..runner import Service
from ..sinks.duckdb import DuckDBSink, DuckDBWriter
from ..sinks.snowflake import sql as q

SEED = 7
START = "2026-01-01T00:00:00"
ROUND_TRIP = 0.150
EMULATOR_EVENTS = 10_000  # the batched sink on the emulator, at most
SEED_WAY_EVENTS = 1_000  # the seed's way on the emulator, at most (~80 events/s)
MODEL_CONFIGS = ((1, 5_000), (2, 5_000), (4, 5_000), (8, 5_000), (4, 10_000), (4, 2_000))
MODEL_BATCHES = 6  # full batches per worker in a model run


@dataclass
class Figure:
    label: str
    events: int
    seconds: float
    batches: int = 0
    round_trips: int = 0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def trips_per_batch(self) -> float:
        return self.round_trips / self.batches if self.batches else 0.0


def _config(target: str, events: int, workers: int, batch_size: int, **extra: Any) -> Config:
    flags = {
        "target": target,
        "events": events,
        "workers": workers,
        "batch_size": batch_size,
        "seed": SEED,
        "start": START,
        "http_port": 0,
        "log_level": "warning",
        "refresh_interval": 3600,
        "progress": False,
        **extra,
    }
    return load(flags, {})


def _run_service(config: Config, sink: Any, on_start: Any = None) -> tuple[float, Any]:
    """Run the real pipeline in this process; seconds from the first event to the drain."""
    started: list[float] = []

    async def start(service: Service) -> None:  # a background task that ends at once
        started.append(time.monotonic())
        if on_start is not None:
            on_start()

    stats = asyncio.run(Service(config, sink=sink, background={"start": start}).run())
    return time.monotonic() - started[0], stats


# -- 1. the emulator ---------------------------------------------------------------


class _RequestCounter:
    """ASGI middleware: counts the requests of the batches' transactions that reach the
    emulator (their statements and COMMIT; a session's record in cdc_sessions is set-up)."""

    _BATCH = (
        "INSERT INTO RAW_ORDERS",
        "MERGE INTO RAW_ORDERS",
        "UPDATE CDC_CHECKPOINTS SET LAST_SEQ",
    )

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queries = 0
        self.counting = False
        self._open: dict[str, int] = {}  # per session: the batch requests since its COMMIT

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (
            not self.counting
            or scope["type"] != "http"
            or not scope["path"].endswith("/queries/v1/query-request")
        ):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        raw = gzip.decompress(body) if headers.get("content-encoding") == "gzip" else body
        sql = " ".join(str(json.loads(raw).get("sqlText", "")).upper().split())
        token = headers.get("authorization", "")
        if sql.startswith(self._BATCH):
            self._open[token] = self._open.get(token, 0) + 1
        elif sql == "COMMIT" and self._open.pop(token, 0):
            self.queries += 1  # the batch's COMMIT
        self.queries += sql.startswith(self._BATCH)
        given = False

        async def again() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app(scope, again, send)


def seed_way(conn: Any, events: int) -> Figure:
    """The seed's way: for every event one INSERT, UPDATE or DELETE, then COMMIT."""
    stream = OrderStream(StreamIdentity(SEED, _start_epoch(), "0", 64, GeneratorSettings()))
    cur = conn.cursor()
    t0 = time.perf_counter()
    for ev in stream.take(events):
        if ev.op is Op.INSERT:
            cur.execute(q.INSERT, q.row(ev))
        elif ev.op is Op.UPDATE:
            cur.execute(
                "UPDATE raw_orders SET status = %s, amount = %s, quantity = %s WHERE order_id = %s",
                (ev.status, q.row(ev)[4], ev.quantity, ev.order_id),
            )
        else:
            cur.execute("DELETE FROM raw_orders WHERE order_id = %s", (ev.order_id,))
        conn.commit()
    return Figure(
        "seed's way (statement + commit per event)",
        events,
        time.perf_counter() - t0,
        events,
        2 * events,
    )


def _start_epoch() -> int:
    return int(dt.datetime.fromisoformat(START).replace(tzinfo=dt.UTC).timestamp())


def emulator_figures(batched_events: int, seed_events: int) -> tuple[Figure, Figure, str]:
    from ..config import Names
    from ..sinks.emulator import Emulator, EmulatorSink, fakesnow_server
    from ..sinks.emulator.account import Account
    from ..sinks.emulator.layer import Layer
    from ..sinks.snowflake import open_connection
    from ..warehouse import sqlfiles

    counter = _RequestCounter(Layer(fakesnow_server().app, Account()))
    with Emulator(app=counter) as emulator:
        conn = open_connection(emulator.spec(database="SEEDWAY"), autocommit=True, tag="seed")
        try:
            cur = conn.cursor()
            for sql in sqlfiles.statements("00", Names(), dialect="snowflake"):
                cur.execute(sql)
            seed = seed_way(conn, seed_events)
        finally:
            conn.close()
        config = _config("emulator", batched_events, 4, 5_000)
        sink = EmulatorSink(config, server=emulator)

        def count() -> None:  # from the first event: the batches' requests, not the set-up
            counter.counting = True

        seconds, stats = _run_service(config, sink, count)
        counter.counting = False
        batched = Figure(
            "batched sink (4 workers x 5,000)",
            stats.applied_total,
            seconds,
            stats.batches,
            counter.queries,
        )
        return seed, batched, emulator.url


# -- 2. the 150 ms model -------------------------------------------------------------


class LatencyWriter:
    """Applies to DuckDB, then waits one round trip per request the Snowflake writer would
    send, holding the locks those requests would take until the COMMIT's round trip ends."""

    retries = 0

    def __init__(
        self,
        inner: DuckDBWriter,
        worker: int,
        chunk_rows: int,
        commits: list[tuple[float, int, int, int]],
        locks: dict[str, threading.Lock],
    ) -> None:
        self._inner = inner
        self._worker = worker
        self._chunk_rows = chunk_rows
        self._commits = commits
        self._locks = locks
        self.work: list[float] = []  # seconds DuckDB took per batch (the "server's" work)
        self.locked: list[int] = []  # locked round trips per batch

    def apply(self, batch: Batch) -> None:
        trips = q.trips(batch, self._chunk_rows)
        t0 = time.monotonic()
        self._inner.apply(batch)
        self.work.append(time.monotonic() - t0)
        held: list[str] = []
        try:
            for _verb, table in trips:  # every batch locks its tables in the same order
                if table and table not in held:
                    self._locks[table].acquire()
                    held.append(table)
                time.sleep(ROUND_TRIP)
        finally:
            for table in held:
                self._locks[table].release()
        self.locked.append(q.locked_trips(trips))
        self._commits.append((time.monotonic(), self._worker, batch.size, len(trips)))

    def close(self) -> None:
        self._inner.close()


class LatencySink(DuckDBSink):
    """DuckDB underneath, Snowflake's round trips on top (only its writers differ)."""

    name = "snowflake-model"

    def __init__(self, path: Path, chunk_rows: int = q.MAX_LIST) -> None:
        super().__init__(path)
        self.chunk_rows = chunk_rows
        #: (monotonic time, worker, events, round trips) of every commit
        self.commits: list[tuple[float, int, int, int]] = []
        self.writers: list[LatencyWriter] = []
        #: One lock per table, shared by every worker (Snowflake's table locks).
        self.locks = {"raw_orders": threading.Lock(), "cdc_checkpoints": threading.Lock()}

    def writer(self, worker: int) -> LatencyWriter:  # type: ignore[override]  # wraps DuckDB's
        w = LatencyWriter(super().writer(worker), worker, self.chunk_rows, self.commits, self.locks)
        self.writers.append(w)
        return w


@dataclass
class ModelRow:
    workers: int
    batch_size: int
    events: int
    seconds: float
    batches: int
    trips_per_batch: float
    steady_rate: float  # events/s while every worker is past its first batch and before its last
    work_ms: float  # median DuckDB time per batch
    locked_per_batch: float  # round trips from a batch's first lock to its COMMIT

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def unlocked_ceiling(self) -> float:
        """What a model without locks allows: every worker's round trips overlap."""
        return self.workers * self.batch_size / (self.trips_per_batch * ROUND_TRIP)

    @property
    def ceiling(self) -> float:
        """With the locks: the locked part of the batches runs one worker at a time."""
        serial = self.batch_size / (self.locked_per_batch * ROUND_TRIP)
        return min(self.unlocked_ceiling, serial)

    @property
    def share(self) -> float:
        return self.steady_rate / self.ceiling


def steady_rate(commits: list[tuple[float, int, int, int]], batch_size: int) -> float:
    """Events/s in steady state: per worker, its full batches after the first, over the time
    from its first commit to its last full one; summed over the workers.

    The ceiling is a steady-state figure; the run's edges (filling the first
    batches, the partial last ones) are not part of it. The whole run's rate is
    printed beside it.
    """
    by_worker: dict[int, list[tuple[float, int]]] = {}
    for t, w, n, _trips in commits:
        if n == batch_size:
            by_worker.setdefault(w, []).append((t, n))
    total = 0.0
    for full in by_worker.values():
        full.sort()
        if len(full) >= 2:
            total += sum(n for _t, n in full[1:]) / (full[-1][0] - full[0][0])
    return total


def model_run(workers: int, batch_size: int, batches_per_worker: int = MODEL_BATCHES) -> ModelRow:
    """One run of the real pipeline on the latency sink (DuckDB in memory underneath)."""
    events = workers * batch_size * batches_per_worker
    path = Path(":memory:")
    sink = LatencySink(path)
    config = _config("duckdb", events, workers, batch_size, duckdb_path=path, flush_interval=5.0)
    seconds, stats = _run_service(config, sink)
    full = [trips for _t, _w, n, trips in sink.commits if n == batch_size] or [1]
    work = sorted(x for w in sink.writers for x in w.work) or [0.0]
    locked = [x for w in sink.writers for x in w.locked] or [1]
    return ModelRow(
        workers,
        batch_size,
        stats.applied_total,
        seconds,
        stats.batches,
        sum(full) / len(full),
        steady_rate(sink.commits, batch_size),
        1000 * work[len(work) // 2],
        sum(locked) / len(locked),
    )


# -- the command ------------------------------------------------------------------------


def main(ns: argparse.Namespace) -> int:
    logs.configure("console", "warning")
    console = Console(width=150)
    batched_events = min(int(getattr(ns, "events", EMULATOR_EVENTS)), EMULATOR_EVENTS)
    seed_events = min(int(getattr(ns, "seed_way_events", SEED_WAY_EVENTS)), SEED_WAY_EVENTS)

    console.print(
        f"[bold]1. The emulator[/bold] (fakesnow over HTTP, the real connector), "
        f"seed {SEED}, start {START}"
    )
    seed, batched, url = emulator_figures(batched_events, seed_events)
    table = Table("way", "events", "seconds", "events/s", "requests", "requests/batch")
    for f in (seed, batched):
        table.add_row(
            f.label,
            f"{f.events:,}",
            f"{f.seconds:.1f}",
            f"{f.rate:,.0f}",
            f"{f.round_trips:,}",
            f"{f.trips_per_batch:.2f}",
        )
    console.print(table)
    ratio = batched.rate / seed.rate if seed.rate else 0.0
    console.print(
        f"batched / seed's way on the emulator: [bold]{ratio:.1f}x[/bold] "
        f"({url}; requests counted at the server)"
    )

    console.print(
        f"\n[bold]2. A model of real Snowflake[/bold]: {ROUND_TRIP * 1000:.0f} ms per "
        "round trip (no BEGIN: the statements and the COMMIT), DuckDB underneath"
    )
    rows = [model_run(w, b) for w, b in MODEL_CONFIGS]
    table = Table(
        "workers",
        "batch",
        "events",
        "trips/batch",
        "locked trips",
        "DuckDB ms/batch",
        "steady ev/s",
        "vs 1 worker",
        "ceiling ev/s",
        "of ceiling",
        "no-lock ceiling",
    )
    one = next((r.steady_rate for r in rows if r.workers == 1), 0.0)
    for r in rows:
        table.add_row(
            str(r.workers),
            f"{r.batch_size:,}",
            f"{r.events:,}",
            f"{r.trips_per_batch:.2f}",
            f"{r.locked_per_batch:.2f}",
            f"{r.work_ms:.0f}",
            f"{r.steady_rate:,.0f}",
            f"{r.steady_rate / one:.2f}x" if one and r.batch_size == 5_000 else "",
            f"{r.ceiling:,.0f}",
            f"{r.share:.0%}",
            f"{r.unlocked_ceiling:,.0f}",
        )
    console.print(table)
    console.print(
        "ceiling = min(workers x batch / (trips x 150 ms), batch / (locked trips x 150 ms)): the "
        "locked part (its first locking statement to COMMIT) runs one worker at a time; 'no-lock ceiling' is what "
        "a model without Snowflake's locks would promise. 'steady': per worker, from its first "
        "commit to its last full batch. The seed's way costs 2 round trips per event: "
        f"{1 / (2 * ROUND_TRIP):.1f} events/s at 150 ms."
    )
    ok = [r for r in rows if r.share >= 0.8]
    console.print(f"configurations at >= 80% of their lock-aware ceiling: {len(ok)} of {len(rows)}")
    return 0 if ok else 1
