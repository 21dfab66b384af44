"""The service's read API: what commands ask a running service, and what the dashboard polls.

- ``GET /api/report``, ``GET /api/tasks``, ``POST /api/query`` (``{"sql": ...}``),
  ``POST /api/verify`` (``{"shard": ...}``): the reads of :mod:`service.reads`,
  each on a new session on a read thread, answered in :mod:`service.wire`'s
  typed JSON. ``/api/query`` is off with ``CDC_QUERY_API=false`` (403).
- ``GET /api/live``: the per-second series and the figures of the moment.
- ``GET /api/warehouse``: orders_aggregated and the task history as the
  service last read them (:class:`~service.watch.WarehouseView`).

A failure is ``{"error": one line, "exit": code}``: the exit code the command
would have had reading the target itself (2 for a refused query, 1 for the
rest), so the command exits the same either way.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web

from . import logs, reads, wire
from .config import SHARD, ConfigError, Settings
from .sinks.base import SinkError, TargetConfigError, Warehouse
from .watch import NotServing, Watch

log = logs.get("api")

MAX_SQL = 100_000  # characters

Handler = Callable[[web.Request], Awaitable[web.Response]]


def _error(status: int, message: str, code: int) -> web.Response:
    return web.json_response({"error": message, "exit": code}, status=status)


def _driver_error(exc: BaseException) -> bool:
    for name in ("duckdb", "snowflake.connector.errors"):
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, module.Error):
            return True
    return False


def _answering(target: str, fn: Handler) -> Handler:
    """Every failure as one line and the command's exit code; never a traceback."""

    async def handler(request: web.Request) -> web.Response:
        try:
            return await fn(request)
        except web.HTTPException:
            raise
        except (ConfigError, TargetConfigError) as exc:
            return _error(400, str(exc), 2)
        except NotServing as exc:
            return _error(503, str(exc), 1)
        except reads.QueryTimeout as exc:
            return _error(504, str(exc), 1)
        except SinkError as exc:
            return _error(500, str(exc), 1)
        except Exception as exc:
            text = logs.one_line(exc)
            if not _driver_error(exc):
                log.error("api.failed", path=request.path, error=text)
            return _error(500, f"{target}: {text}", 1)

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
    verifying = asyncio.Lock()  # one verify at a time: it replays the stream

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
        work = watch.read(lambda s: reads.query(s, sql, reads.QUERY_ROWS, seconds))
        try:
            rows = await asyncio.wait_for(work, seconds + 5)  # DuckDB interrupts before this
        except TimeoutError:
            raise reads.QueryTimeout(
                f"query: no answer within its time limit of {seconds:g} s (CDC_QUERY_TIMEOUT)"
            ) from None
        return reply(result=wire.encode_rows(rows.columns, rows.rows), more=rows.more)

    async def verify(request: web.Request) -> web.Response:
        shard = (await _json_body(request)).get("shard", sink.shard)
        if not isinstance(shard, str) or not SHARD.match(shard):
            raise ConfigError("shard", "must be 1-16 letters, digits or underscores")
        async with verifying:
            report = await watch.read(lambda s: reads.verify(s, sink.warehouse, shard))
        return reply(report={"stream": report.stream, "checks": [asdict(c) for c in report.checks]})

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
        ("POST", "/api/verify"): verify,
        ("GET", "/api/live"): live,
        ("GET", "/api/warehouse"): warehouse,
    }
    for (method, path), fn in routes.items():
        app.router.add_route(method, path, _answering(sink.name, fn))
