"""Wiring, supervision, signals and the shutdown order.

Start: open the target, settle which stream this is and where each partition
resumes, then run the producer and one consumer per worker under one
``TaskGroup``: if any of them dies, the others are cancelled and the error
surfaces here, so nothing hangs and nothing dies silently.

Stop (SIGTERM/SIGINT, or the bound reached): stop generating; every consumer
drains its queue, applies its partial batch and commits; connections close;
exit 0. All of it within ``shutdown_timeout`` seconds, after which, or on a
second signal, the run is abandoned (exit 1): what was committed stays
consistent with its checkpoints, and the next run resumes from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import checkpoint, discovery, logs, scheduler, warehouse
from .checkpoint import resolve
from .config import Config, ConfigError
from .consumers import consume
from .generator import OrderStream, StreamIdentity
from .http import HttpServer
from .metrics import Metrics, Stats
from .producer import produce
from .queue import EventQueue
from .router import Router
from .sinks import make_sink
from .sinks.base import Sink
from .watch import Watch

log = logs.get("runner")

REPORT_EVERY = 5.0


class ForcedExit(Exception):
    """The drain did not finish: a second signal, or the shutdown timeout."""


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
        on_start: Callable[[Service], Any] | None = None,
    ) -> None:
        self.config = config
        self.settings = config.settings
        self.sink = sink or make_sink(config)
        self.metrics = metrics or Metrics()
        self.stats = Stats()
        self.state = State()
        self.identity: StreamIdentity | None = None
        self.stream: OrderStream | None = None
        self.queues: list[EventQueue] = []
        self._stopping = asyncio.Event()
        self._forced = asyncio.Event()
        self._on_start = on_start
        self.stop_reason: str | None = None
        self.http: HttpServer | None = None
        self.watch = Watch(self.sink, self.settings, self.stats, self.metrics, self.queue_depth)

    # -- signals -------------------------------------------------------------

    def request_stop(self, reason: str) -> None:
        """First call: drain and stop. Second call: give up at once."""
        loop = asyncio.get_running_loop()
        if self._stopping.is_set():
            log.warning("service.forced", reason=f"second {reason}")
            self._forced.set()
            return
        self.stop_reason = reason
        self.state.draining = True
        self.state.ready = False
        log.info("service.stopping", reason=reason, timeout_s=self.settings.shutdown_timeout)
        self._stopping.set()
        loop.call_later(self.settings.shutdown_timeout, self._timeout)

    def _timeout(self) -> None:
        if not self._forced.is_set():
            log.error(
                "service.forced",
                reason="shutdown timeout",
                timeout_s=self.settings.shutdown_timeout,
            )
            self._forced.set()

    # -- the run -------------------------------------------------------------

    async def open(self) -> StreamIdentity:
        """Connect, create the schema, and settle the stream and its checkpoints."""
        sink, s = self.sink, self.settings
        await asyncio.to_thread(sink.open)
        await asyncio.to_thread(warehouse.prepare, sink)
        stored = await asyncio.to_thread(sink.load_stream)
        identity = resolve(self.config, stored)
        claim = await asyncio.to_thread(
            sink.claim_stream, json.dumps(identity.as_dict()), identity.partitions, s.reset
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
        )
        return identity

    async def run(self) -> Stats:
        """Run to the end of the stream, the duration, or a signal. Returns the counts."""
        loop = asyncio.get_running_loop()
        s = self.settings
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, signal.Signals(sig).name)
        http = None
        try:
            if s.http_port:
                http = self.http = HttpServer(self, s.http_host, s.http_port, s.stall_timeout)
                try:
                    await http.start()
                except OSError as exc:
                    http = None
                    raise ConfigError(
                        "CDC_HTTP_PORT",
                        f"cannot listen on {s.http_host}:{s.http_port}: {exc.strerror}",
                    ) from None
            identity = await self.open()
            stream = self.stream = OrderStream(identity)
            router = Router(identity.partitions, s.workers, self._checkpoints)
            per_worker = max(1, s.queue_size // s.workers)
            self.queues = [EventQueue(per_worker) for _ in range(s.workers)]
            self.state.ready = True
            await self._start_watching()
            if self._on_start is not None:
                self._on_start(self)
            pipeline = asyncio.ensure_future(self._pipeline(stream, router))
            reporter = asyncio.ensure_future(self._report())
            refresher = asyncio.ensure_future(
                scheduler.schedule(self.sink, s.refresh_interval, self.metrics)
            )
            forced = asyncio.ensure_future(self._forced.wait())
            try:
                await asyncio.wait({pipeline, forced}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                reporter.cancel()
                refresher.cancel()
                forced.cancel()
            if pipeline.done():
                # A refresh in flight finishes and closes its connection before
                # the sink closes under it (the scheduler bounds that wait).
                with contextlib.suppress(BaseException):
                    await refresher
            if not pipeline.done():
                pipeline.cancel()
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(pipeline, 2.0)
                raise ForcedExit(self.stats)
            pipeline.result()  # raises what a stage raised
            if not self._stopping.is_set():
                # A bounded run ends with fresh reporting layers (a drain on SIGTERM
                # does not: it has a deadline to keep).
                await asyncio.to_thread(scheduler.refresh_now, self.sink, self.metrics)
            self._summary()
            return self.stats
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self.state.ready = False
            await self.watch.stop()  # reads end before the target closes under them
            await asyncio.to_thread(self.sink.close)
            self.watch.forget()
            if http is not None:
                await http.stop()

    async def _pipeline(self, stream: OrderStream, router: Router) -> None:
        s = self.settings
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(
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
                    ),
                    name="producer",
                )
                for w, q in enumerate(self.queues):
                    tg.create_task(
                        consume(
                            w,
                            q,
                            self.sink,
                            self.stats,
                            self.metrics,
                            batch_size=s.batch_size,
                            flush_interval=s.flush_interval,
                        ),
                        name=f"consumer-{w}",
                    )
        except BaseExceptionGroup as group:
            # One stage failed and the others were cancelled: surface the cause.
            first = group.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

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
            )
            last_applied, last_t = applied, now

    def _summary(self) -> None:
        st = self.stats
        elapsed = st.elapsed()
        log.info(
            "pipeline.summary",
            generated={op.name.lower(): n for op, n in st.generated.items()},
            applied={op.name.lower(): n for op, n in st.applied.items()},
            generated_total=st.generated_total,
            applied_total=st.applied_total,
            skipped=st.skipped,
            retries=st.retries,
            batches=st.batches,
            elapsed_s=round(elapsed, 3),
            events_per_s=round(st.applied_total / max(elapsed, 1e-9)),
            producer_blocked_s=round(st.blocked_seconds, 3),
            stream_seq=self.stream.seq if self.stream else 0,
        )
