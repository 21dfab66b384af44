"""Health, readiness and metrics over HTTP (aiohttp, on the service's own loop).

- ``/healthz`` (liveness): 200 while the loop answers and no stage is stuck:
  stuck means events are waiting but nothing has committed for
  ``stall_timeout`` seconds. Kubernetes restarts a pod that fails it.
- ``/readyz`` (readiness): 200 once the target is connected and the schema
  initialised; 503 before that and while draining.
- ``/metrics``: Prometheus text format.
- ``/``: the dashboard (:mod:`service.watch.dashboard`), and ``/api/...``: what it
  and the commands read from a running service (:mod:`service.watch.api`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import logs
from ..config import Settings
from . import api, dashboard
from .metrics import Metrics, Stats
from .watcher import Watch

log = logs.get("http")


class Health(Protocol):
    """Whether the service is up and ready (the runner's ``State``)."""

    ready: bool
    draining: bool
    started_at: float


class Service(Protocol):
    """What the HTTP server reads of the running service."""

    @property
    def stats(self) -> Stats: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def state(self) -> Health: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def watch(self) -> Watch: ...

    def queue_depth(self) -> int: ...


def stalled(service: Service, now: float | None = None) -> float:
    """Seconds the pipeline has had work waiting without a commit (0 when it is fine)."""
    now = time.monotonic() if now is None else now
    st = service.stats
    waiting = service.queue_depth() > 0 or st.generated_total > st.applied_total
    if not waiting or not service.state.ready:
        return 0.0
    since = max(st.last_commit, service.state.started_at)
    return max(0.0, now - since)


def app(service: Service, stall_timeout: float) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        late = stalled(service)
        if late > stall_timeout:
            return web.json_response(
                {"status": "stalled", "seconds_without_commit": round(late, 1)}, status=503
            )
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        st = service.state
        if st.ready and not st.draining:
            return web.json_response({"status": "ready"})
        reason = "draining" if st.draining else "starting"
        return web.json_response({"status": reason}, status=503)

    async def metrics(_: web.Request) -> web.Response:
        service.metrics.queue_depth.set(service.queue_depth())
        body = generate_latest(service.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/readyz", readyz)
    application.router.add_get("/metrics", metrics)
    dashboard.add_routes(application)
    api.add_routes(application, service.watch, service.settings)
    return application


class HttpServer:
    """Started before the target is opened (so probes answer during start-up)."""

    def __init__(self, service: Service, host: str, port: int, stall_timeout: float) -> None:
        self._runner = web.AppRunner(
            app(service, stall_timeout), access_log=None, handle_signals=False
        )
        self._host, self._port = host, port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        log.info(
            "http.listening",
            host=self._host,
            port=self.port,
            paths="/ /healthz /readyz /metrics /api",
        )

    async def stop(self, timeout: float = 2.0) -> None:
        """Close the server; requests still running after ``timeout`` seconds are dropped (a
        stop keeps its deadline whoever is connected)."""
        try:
            await asyncio.wait_for(self._runner.cleanup(), timeout)
        except TimeoutError:
            log.warning("http.stop_abandoned", waited_s=timeout)
