"""Wiring, supervision, signals and the shutdown order.

Start: the signal handlers first, then the HTTP server, then open the target
(sign in, create the tables), settle which stream this is and claim its shard.
A signal during any of that ends the start at once: nothing was accepted yet.

Run: the producer and one consumer per worker (the pipeline), beside the
background tasks (the throughput reporter, the local refresher, the progress
bar). Every one is supervised: if any of them fails, the others are cancelled,
each failure is named, and the run ends with exit 1; nothing dies silently.

Stop (SIGTERM/SIGINT, or the bound reached): stop generating; every consumer
drains its queue, applies its partial batch and commits; connections close;
exit 0. All of it before the deadline (``shutdown_timeout`` seconds after the
signal), after which, or on a second signal, the run is abandoned (exit 1)
without waiting for any thread: what was committed stays consistent with its
checkpoints (each batch is one transaction), and the next run resumes from them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psutil

from . import logs, threads
from .config import Config, ConfigError
from .pipeline import checkpoint, resume
from .pipeline.checkpoint import resolve
from .pipeline.consumers import consume
from .pipeline.generator import OrderStream, StreamIdentity
from .pipeline.pace import Pace, Reading
from .pipeline.producer import produce
from .pipeline.queue import EventQueue
from .pipeline.router import Router
from .pipeline.simclock import iso
from .sinks import make_sink
from .sinks.base import Fenced, Sink, SinkError
from .warehouse import layers, scheduler
from .watch import discovery, memory
from .watch.http import HttpServer
from .watch.metrics import Metrics, Stats
from .watch.watcher import Watch

log = logs.get("runner")
T = TypeVar("T")

REPORT_EVERY = 5.0
#: What a forced stop still grants cancelled stages to unwind (seconds).
UNWIND = 0.5

#: A background task: given the running service, a coroutine that runs until cancelled.
Background = Callable[["Service"], Coroutine[Any, Any, None]]


class ForcedExit(Exception):
    """The drain did not finish: a second signal, or the shutdown timeout."""


class StageFailed(Exception):
    """One or more stages failed; ``failures`` names each (stage, exception)."""

    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        super().__init__("; ".join(f"{name}: {logs.one_line(exc)}" for name, exc in failures))
        self.failures = failures

    def lines(self) -> list[tuple[str, str, dict[str, str]]]:
        """What the log says of it: (level, event, fields) per failure, one error line each,
        but after a takeover one only (every worker meets it at its next batch; what else
        failed meanwhile is a consequence, told as a warning)."""
        fenced = next((exc for _, exc in self.failures if isinstance(exc, Fenced)), None)
        out: list[tuple[str, str, dict[str, str]]] = []
        for stage, exc in self.failures:
            if fenced is not None and exc is not fenced:
                out.append(
                    (
                        "warning",
                        "service.also_failed",
                        {"error": logs.one_line(exc), "stage": stage},
                    )
                )
            elif isinstance(exc, SinkError):
                out.append(("error", "service.failed", {"error": str(exc), "stage": stage}))
            else:
                out.append(
                    ("error", "service.crashed", {"error": logs.one_line(exc), "stage": stage})
                )
        return out


@dataclass
class State:
    """What health and readiness are judged on."""

    ready: bool = False
    draining: bool = False
    started_at: float = field(default_factory=time.monotonic)


class Service:
    def __init__(
        self,
        config: Config,
        sink: Sink | None = None,
        metrics: Metrics | None = None,
        background: Mapping[str, Background] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.metrics = metrics or Metrics()
        self.sink = sink or make_sink(config, observer=self.metrics)
        self.stats = Stats()
        self.state = State()
        self.identity: StreamIdentity | None = None
        self.stream: OrderStream | None = None
        self.snapshots: resume.SnapshotWriter | None = None
        self.pace: Pace | None = None
        self.queues: list[EventQueue] = []
        self._background = dict(background or {})
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._deadline: float | None = None
        self._checkpoints: dict[int, int] = {}
        self.stop_reason: str | None = None
        self.http: HttpServer | None = None
        self.watch = Watch(
            self.sink, self.settings, self.stats, self.metrics, self.queue_depth, self.traffic
        )
        self.metrics.follow(self.traffic)

    # -- signals -------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """First call: drain and stop, by the deadline. Second call: give up at once."""
        loop = asyncio.get_running_loop()
        if self._stopping.is_set():
            log.warning("service.forced", reason=f"second {reason}")
            self._forced.set()
            return
        self.stop_reason = reason
        self.state.draining = True
        self.state.ready = False
        self._deadline = loop.time() + self.settings.shutdown_timeout
        log.info("service.stopping", reason=reason, timeout_s=self.settings.shutdown_timeout)
        self._stopping.set()
        loop.call_at(self._deadline, self._timeout)

    def _timeout(self) -> None:
        if not self._forced.is_set():
            log.error(
                "service.forced",
                reason="shutdown timeout",
                timeout_s=self.settings.shutdown_timeout,
            )
            self._forced.set()

    def _budget(self, cap: float = 10.0) -> float:
        """Seconds a step of the stop may take: what is left of the deadline (0 once it has
        passed), at most ``cap``; ``cap`` when no stop was asked (a bounded run's end)."""
        left = self._left()
        return cap if left is None else min(left, cap)

    def _left(self) -> float | None:
        """Seconds to the deadline (None: no stop requested)."""
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - asyncio.get_running_loop().time())

    async def _unless_stopped(self, work: Awaitable[T]) -> tuple[bool, T | None]:
        """``work``, unless a stop is requested first: then it is abandoned (its thread,
        if any, left to finish or not on its own) and ``(False, None)`` returned."""
        task = asyncio.ensure_future(work)
        stop = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if task.done():
            return True, task.result()
        task.cancel()
        return False, None

    # -- the run -------------------------------------------------------------

    async def open(self) -> StreamIdentity:
        """Connect, create the schema, and settle the stream and its checkpoints."""
        sink, s = self.sink, self.settings
        await threads.run(sink.open, name="cdc-open")
        await threads.run(layers.prepare, sink, name="cdc-layers")
        stored = await threads.run(sink.load_stream, name="cdc-stream")
        identity = resolve(self.config, stored)
        claim = await threads.run(
            sink.claim_stream,
            json.dumps(identity.as_dict()),
            identity.partitions,
            s.reset,
            name="cdc-claim",
        )
        self.identity = identity
        self._checkpoints = claim.checkpoints
        if claim.previous is not None and claim.previous.writer != checkpoint.this_writer():
            log.info(
                "service.took_over",
                shard=claim.shard,
                previous=claim.previous.describe(),
                writer_epoch=claim.epoch,
            )
        log.info(
            "service.started",
            target=sink.name,
            stream=identity.describe(),
            resume_from=max(claim.checkpoints.values(), default=0),
            writer_epoch=claim.epoch,
            workers=s.workers,
            batch_size=s.batch_size,
            queue_size=s.queue_size,
            events=s.events,
            duration=s.duration,
            rate=s.rate,
            # Simulated seconds per wall second (the profile's, or steady's 0.5 s per event).
            time_scale=round(s.rate * identity.generator.mean_gap_seconds, 6) if s.rate else None,
        )
        # Where the producer starts: the newest snapshot every partition has passed.
        self.stream = await resume.resume(sink, identity, claim.checkpoints, s.events)
        return identity

    async def run(self) -> Stats:
        """Run to the end of the stream, the duration, or a signal. Returns the counts.

        Raises :class:`ForcedExit` when the drain was abandoned, :class:`StageFailed`
        when a stage failed.
        """
        loop = asyncio.get_running_loop()
        s = self.settings
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        opened = False
        try:
            if s.http_port:
                await self._start_http()
            started, identity = await self._unless_stopped(self.open())
            opened = True
            if not started or identity is None:
                log.info("service.stopped", reason=self.stop_reason, before="the target opened")
                return self.stats
            stream = self.stream
            assert stream is not None  # open() resumed it
            self.snapshots = resume.writer_for(self.sink, identity, self.metrics)
            self.pace = Pace(stream, s.rate)
            router = Router(identity.partitions, s.workers, self._checkpoints)
            per_worker = max(1, s.queue_size // s.workers)
            self.queues = [EventQueue(per_worker) for _ in range(s.workers)]
            self.state.ready = True
            await self._start_watching()
            self.stats.streaming_since = time.monotonic()
            self.stats.startup = _process_age()
            await self._supervise(stream, router)
            if not self._stopping.is_set():
                # A bounded run ends with fresh reporting layers (a drain on SIGTERM
                # does not: it has a deadline to keep; a signal here just stops it).
                await self._unless_stopped(
                    threads.run(scheduler.refresh_now, self.sink, self.metrics, name="cdc-refresh")
                )
            self._summary()
            return self.stats
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.state.ready = False
            if opened and not self._forced.is_set():
                if self.snapshots is not None:  # a save in flight ends before its session
                    await self.snapshots.settle(self._budget())
                # Reads end before the target closes under them; connections close within
                # what is left of the deadline (never past it).
                await self._stop_watching()
                await self._close_sink()
            self.watch.forget()  # commands stop asking this process for the file
            if self.http is not None:
                await self.http.stop(0.5 if self._forced.is_set() else 2.0)

    async def _stop_watching(self) -> None:
        try:
            await asyncio.wait_for(self.watch.stop(), max(0.1, self._budget()))
        except TimeoutError:
            log.warning("watch.stop_abandoned", reason="the deadline passed")

    async def _close_sink(self) -> None:
        """Close the target's connections within what is left of the deadline (never past it);
        a failure to close is one warning line, never a mask over why the run ended."""
        try:
            await asyncio.wait_for(threads.run(self.sink.close), self._budget())
        except TimeoutError:
            log.warning("sink.close_abandoned", reason="the deadline passed")
        except Exception as exc:
            log.warning("sink.close_failed", error=logs.one_line(exc))

    async def _start_http(self) -> None:
        s = self.settings
        http = HttpServer(self, s.http_host, s.http_port, s.stall_timeout)
        try:
            await http.start()
        except OSError as exc:
            raise ConfigError(
                "CDC_HTTP_PORT", f"cannot listen on {s.http_host}:{s.http_port}: {exc.strerror}"
            ) from None
        self.http = http

    async def _supervise(self, stream: OrderStream, router: Router) -> None:
        """The pipeline beside the background tasks, until the pipeline ends; any failure
        cancels the rest and is raised (all of them named); a forced stop abandons all."""
        s = self.settings
        stages: dict[asyncio.Task[Any], str] = {}
        pipeline = asyncio.ensure_future(self._pipeline(stream, router))
        stages[pipeline] = "pipeline"
        background: dict[str, Background] = {
            "reporter": lambda service: service._report(),
            "refresher": lambda service: scheduler.schedule(
                service.sink, s.refresh_interval, service.metrics
            ),
            **self._background,
        }
        for name, make in background.items():
            stages[asyncio.ensure_future(make(self))] = name
        forced: asyncio.Task[Any] = asyncio.ensure_future(self._forced.wait())
        failures: list[tuple[str, BaseException]] = []
        try:
            pending: set[asyncio.Task[Any]] = set(stages)
            while pipeline in pending:
                done, pending = await asyncio.wait(
                    pending | {forced}, return_when=asyncio.FIRST_COMPLETED
                )
                if forced in done:
                    await self._abandon(set(stages))
                    raise ForcedExit(self.stats)
                pending.discard(forced)
                for task in done:
                    if not task.cancelled() and task.exception() is not None:
                        failures += _named(stages[task], task.exception())
                if failures:
                    break
        finally:
            forced.cancel()
        rest = {t for t in stages if not t.done()}
        for task in rest:
            task.cancel()
        if rest:
            # A refresh in flight finishes and closes its session before the sink closes
            # (the scheduler bounds that), within the deadline when there is one.
            await asyncio.wait(rest, timeout=self._left())
        for task in rest:
            if task.done() and not task.cancelled() and task.exception() is not None:
                failures += _named(stages[task], task.exception())
        if failures:
            raise StageFailed(failures)

    async def _abandon(self, tasks: set[asyncio.Task[None]]) -> None:
        """A forced stop: cancel everything, grant it a moment to unwind, wait no longer."""
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks, timeout=UNWIND)

    async def _pipeline(self, stream: OrderStream, router: Router) -> None:
        s = self.settings
        async with asyncio.TaskGroup() as tg:
            tg.create_task(
                _stage(
                    "producer",
                    produce(
                        stream,
                        router,
                        self.queues,
                        self._stopping,
                        self.stats,
                        self.metrics,
                        events=s.events,
                        duration=s.duration,
                        rate=s.rate,
                        snapshots=self.snapshots,
                        pace=self.pace,
                    ),
                ),
                name="producer",
            )
            for w, q in enumerate(self.queues):
                tg.create_task(
                    _stage(
                        f"consumer-{w}",
                        consume(
                            w,
                            q,
                            self.sink,
                            self.stats,
                            self.metrics,
                            batch_size=s.batch_size,
                            flush_interval=s.flush_interval,
                        ),
                    ),
                    name=f"consumer-{w}",
                )

    # -- watching: the dashboard, and the commands' reads during a run -------

    async def _start_watching(self) -> None:
        """Sample for the dashboard, serve reads, and leave a note beside the DuckDB file."""
        if self.http is None:
            return  # no port: nobody to show anything to
        url = discovery.url_for(self.settings.http_host, self.http.port)
        path = self.settings.duckdb_path if self.config.target == "duckdb" else None
        await self.watch.start(url, path)

    def queue_depth(self) -> int:
        return sum(q.qsize() for q in self.queues)

    def traffic(self) -> Reading | None:
        """Where the run is on its traffic profile (None: the producer has not started)."""
        return None if self.pace is None else self.pace.reading()

    async def _report(self) -> None:
        """A throughput line every few seconds."""
        last_applied, last_t = 0, self.stats.elapsed()
        while True:
            await asyncio.sleep(REPORT_EVERY)
            now, applied = self.stats.elapsed(), self.stats.applied_total
            self.metrics.queue_depth.set(self.queue_depth())
            log.info(
                "pipeline.throughput",
                events_per_s=round((applied - last_applied) / max(now - last_t, 1e-9)),
                generated=self.stats.generated_total,
                applied=applied,
                queue_depth=self.queue_depth(),
                producer_blocked_s=round(self.stats.blocked_seconds, 3),
                **self._traffic_fields(),
                **memory.sample(),
                **await self._duckdb_memory(),
            )
            last_applied, last_t = applied, now

    async def _duckdb_memory(self) -> dict[str, float]:
        """DuckDB's own account of its memory, on the embedded target (else nothing)."""
        if self.sink.name != "duckdb":
            return {}

        def read() -> float | None:
            session = self.sink.connect_sql()
            try:
                return memory.duckdb_mb(session)
            finally:
                session.close()

        try:
            mb = await threads.run(read, name="cdc-memory")
        except Exception:
            return {}
        return {} if mb is None else {"duckdb_mb": mb}

    def _traffic_fields(self) -> dict[str, object]:
        """The profile's figures for the throughput line (none for steady, unpaced)."""
        now = self.traffic()
        if now is None or (now.profile == "steady" and now.target is None):
            return {}
        fields: dict[str, object] = {"traffic": now.profile}
        if now.target is not None:
            fields |= {"target_per_s": round(now.target), "behind_s": round(now.behind, 2)}
        if now.simulated is not None:
            fields["simulated_at"] = iso(now.simulated)
        return fields

    def _summary(self) -> None:
        st = self.stats
        elapsed, streaming = st.elapsed(), st.streaming()
        log.info(
            "pipeline.summary",
            generated={op.name.lower(): n for op, n in st.generated.items()},
            applied={op.name.lower(): n for op, n in st.applied.items()},
            generated_total=st.generated_total,
            applied_total=st.applied_total,
            skipped=st.skipped,
            from_snapshot=st.from_snapshot,
            retries=st.retries,
            batches=st.batches,
            elapsed_s=round(elapsed, 3),
            events_per_s=round(st.applied_total / max(elapsed, 1e-9)),
            # Steady state apart from start-up: the interpreter, the imports, opening the
            # target, resuming the stream (startup_s), and the final refresh (neither).
            startup_s=None if st.startup is None else round(st.startup, 3),
            streaming_s=round(streaming, 3),
            streaming_events_per_s=round(st.applied_total / streaming) if streaming else None,
            producer_blocked_s=round(st.blocked_seconds, 3),
            stream_seq=self.stream.seq if self.stream else 0,
        )


def _process_age() -> float | None:
    """Seconds since this process was launched (the interpreter's start included)."""
    try:
        return time.time() - float(psutil.Process().create_time())
    except psutil.Error:
        return None


class _Failed(Exception):
    """A stage's exception, with the stage's name."""

    def __init__(self, stage: str, exc: BaseException) -> None:
        super().__init__(stage)
        self.stage, self.exc = stage, exc


async def _stage(name: str, work: Awaitable[None]) -> None:
    try:
        await work
    except Exception as exc:
        raise _Failed(name, exc) from exc


def _named(name: str, exc: BaseException | None) -> list[tuple[str, BaseException]]:
    """(stage, exception) of every failure in ``exc`` (a task group's failures, one by one)."""
    if exc is None:
        return []
    if isinstance(exc, _Failed):
        return [(exc.stage, exc.exc)]
    if isinstance(exc, BaseExceptionGroup):
        return [f for e in exc.exceptions for f in _named(name, e)]
    return [(name, exc)]
