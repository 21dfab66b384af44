"""The service's read API: what commands ask a running service, and what the dashboard polls.

- ``GET /api/report``, ``GET /api/tasks``, ``POST /api/query`` (``{"sql": ...}``):
  the reads of :mod:`service.watch.reads`, each on a new session on a read thread,
  answered in :mod:`service.watch.wire`'s typed JSON. ``/api/query`` is off with
  ``CDC_QUERY_API=false`` (403).
- ``POST /api/snapshot`` (``{}``): the stream tables of one read-only snapshot,
  streamed for ``verify`` to check in its own process (:mod:`service.watch.snapshot`).
- ``GET /api/live``: the per-second series and the figures of the moment.
- ``GET /api/warehouse``: orders_aggregated and the task history as the
  service last read them (:class:`~service.watch.watcher.WarehouseView`).

A failure is ``{"error": one line, "exit": code}``: the exit code the command
would have had reading the target itself (2 for a refused query, 1 for the
rest), so the command exits the same either way.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .. import logs
from ..config import ConfigError, Settings
from ..sinks.base import SinkError, TargetConfigError, Warehouse
from . import reads, snapshot, wire
from .watcher import NotServing, Watch

log = logs.get("api")

MAX_SQL = 100_000  # characters
#: Seconds a snapshot waits for the command to take a batch (a command that stopped
#: reading must not hold a read thread, and its transaction, for ever).
SEND_TIMEOUT = 60.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str, code: int) -> web.Response:
    return web.json_response({"error": message, "exit": code}, status=status)


def _driver_error(exc: BaseException) -> bool:
    for name in ("duckdb", "snowflake.connector.errors"):
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, module.Error):
            return True
    return False


def _failure(target: str, path: str, exc: Exception) -> tuple[int, str, int]:
    """HTTP status, one line, and the exit code the command would have had."""
    if isinstance(exc, ConfigError | TargetConfigError):
        return 400, str(exc), 2
    if isinstance(exc, NotServing):
        return 503, str(exc), 1
    if isinstance(exc, reads.QueryTimeout):
        return 504, str(exc), 1
    if isinstance(exc, SinkError):
        return 500, str(exc), 1
    text = logs.one_line(exc)
    if not _driver_error(exc):
        log.error("api.failed", path=path, error=text)
    return 500, f"{target}: {text}", 1


def _answering(target: str, fn: Handler) -> Handler:
    """Every failure as one line and the command's exit code; never a traceback."""

    async def handler(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except web.HTTPException:
            raise
        except Exception as exc:
            return _error(*_failure(target, request.path, exc))

    return handler


async def _json_body(request: web.Request) -> dict[str, Any]:
    # JSON only: a browser cannot send it cross-site without asking first (no CORS here).
    if request.content_type != "application/json":
        raise ConfigError("request", "send a JSON body (Content-Type: application/json)")
    try:
        body = await request.json()
    except ValueError:
        raise ConfigError("request", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ConfigError("request", "the body must be a JSON object")
    return body


def add_routes(app: web.Application, watch: Watch, settings: Settings) -> None:
    sink = watch.sink
    local = sink.warehouse is Warehouse.LOCAL
    exporting = asyncio.Lock()  # one snapshot at a time

    def reply(**fields: Any) -> web.Response:
        return web.json_response({"target": sink.name, **fields})

    async def report(_: web.Request) -> web.Response:
        rows = await watch.read(reads.aggregated)
        return reply(result=wire.encode_rows(rows.columns, rows.rows))

    async def tasks(_: web.Request) -> web.Response:
        rows = await watch.read(lambda s: reads.tasks(s, local))
        return reply(local=local, result=wire.encode_rows(rows.columns, rows.rows))

    async def query(request: web.Request) -> web.Response:
        if not settings.query_api:
            return _error(
                403, "query: the running service has its query API off (CDC_QUERY_API=false)", 2
            )
        sql = (await _json_body(request)).get("sql")
        if not isinstance(sql, str) or not sql.strip():
            raise ConfigError("query", "give one SELECT statement")
        if len(sql) > MAX_SQL:
            raise ConfigError("query", f"the SQL is longer than {MAX_SQL:,} characters")
        seconds = settings.query_timeout
        work = watch.read(lambda s: reads.query(s, sql, reads.QUERY_ROWS, seconds, local))
        try:
            rows = await asyncio.wait_for(work, seconds + 5)  # DuckDB interrupts before this
        except TimeoutError:
            raise reads.QueryTimeout(
                f"query: no answer within its time limit of {seconds:g} s (CDC_QUERY_TIMEOUT)"
            ) from None
        return reply(result=wire.encode_rows(rows.columns, rows.rows), more=rows.more)

    async def snapshot_(request: web.Request) -> web.StreamResponse:
        await _json_body(request)  # JSON only, as every POST here
        if not watch.serving:
            raise NotServing("the service is not serving reads (starting or stopping)")
        response = web.StreamResponse(
            headers={"Content-Type": snapshot.CONTENT_TYPE, "X-Cdc-Target": sink.name}
        )
        await response.prepare(request)
        loop = asyncio.get_running_loop()

        def send(chunk: bytes) -> None:  # on the read thread: waits for the socket
            future = asyncio.run_coroutine_threadsafe(response.write(chunk), loop)
            future.result(timeout=SEND_TIMEOUT)

        try:
            async with exporting:
                await watch.read(lambda s: snapshot.export(s, send))
        except (ConnectionError, asyncio.CancelledError):
            raise  # the command went away
        except Exception as exc:
            status, message, code = _failure(sink.name, request.path, exc)
            error = {"error": message, "exit": code, "retry": status == 503}
            await response.write(snapshot.frame(error))
        await response.write_eof()
        return response

    async def live(_: web.Request) -> web.Response:
        return web.json_response(watch.live())

    async def warehouse(_: web.Request) -> web.Response:
        view = watch.view

        def rows(r: reads.Rows | None) -> Any:
            return None if r is None else wire.encode_rows(r.columns, r.rows)

        return reply(
            read_at=view.read_at,
            interval_s=view.interval,
            error=view.error,
            aggregated=rows(view.aggregated),
            tasks=rows(view.tasks),
        )

    routes = {
        ("GET", "/api/report"): report,
        ("GET", "/api/tasks"): tasks,
        ("POST", "/api/query"): query,
        ("POST", "/api/snapshot"): snapshot_,
        ("GET", "/api/live"): live,
        ("GET", "/api/warehouse"): warehouse,
    }
    for (method, path), fn in routes.items():
        app.router.add_route(method, path, _answering(sink.name, fn))
