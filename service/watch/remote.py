"""The commands' side of a running service: its read API over HTTP (stdlib only).

A command that finds its DuckDB file locked by ``ecomm-cdc run`` reads the
service's note (:mod:`service.watch.discovery`) and calls :mod:`service.watch.api`. The
answers carry typed values (:mod:`service.watch.wire`), so what the command prints
is what it would print reading the file itself, and a failure has the same
exit code: a refused query is a :class:`ConfigError` (exit 2), the rest a
:class:`SinkError` (exit 1).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..config import ConfigError
from ..sinks.base import SinkError, Warehouse
from ..verify import check as verifying
from . import snapshot, wire
from .discovery import Note
from .reads import Rows

#: Seconds to wait for an answer (for a snapshot: between two of its reads from the socket).
READ_TIMEOUT = 60.0
SNAPSHOT_TIMEOUT = 120.0


class Unavailable(SinkError):
    """The service did not answer, or is starting or stopping: the caller may wait and retry."""


class Remote:
    """The reads of :mod:`service.watch.reads`, asked of the service that holds the target."""

    def __init__(self, note: Note, query_timeout: float = 10.0) -> None:
        self.note = note
        self.name = "duckdb"  # the target's name, as the service reports it
        self._query_timeout = query_timeout

    def report(self) -> Rows:
        reply = self._call("GET", "/api/report")
        return Rows(*wire.decode_rows(reply["result"]))

    def tasks(self) -> tuple[bool, Rows]:
        reply = self._call("GET", "/api/tasks")
        return bool(reply["local"]), Rows(*wire.decode_rows(reply["result"]))

    def query(self, sql: str) -> Rows:
        # The service interrupts a query at its own limit; this one only covers a lost reply.
        reply = self._call("POST", "/api/query", {"sql": sql}, self._query_timeout + 30)
        return Rows(*wire.decode_rows(reply["result"]), more=bool(reply.get("more")))

    def verify(self, shard: str) -> verifying.Report:
        """The service streams one snapshot; the replay and the checks run here."""
        try:
            with self._open("POST", "/api/snapshot", {}, SNAPSHOT_TIMEOUT) as resp:
                self.name = resp.headers.get("X-Cdc-Target", self.name)
                tables = snapshot.receive(resp)
        except snapshot.Broken as exc:
            raise (Unavailable(str(exc)) if exc.retry else SinkError(str(exc))) from None
        except (OSError, ValueError) as exc:
            raise Unavailable(f"{self.note.describe()} did not answer: {exc}") from None
        session = snapshot.load(tables)
        try:
            return verifying.verify(session, Warehouse.LOCAL, shard)
        finally:
            session.close()

    def _call(
        self, method: str, path: str, body: Any = None, timeout: float = READ_TIMEOUT
    ) -> dict[str, Any]:
        try:
            with self._open(method, path, body, timeout) as resp:
                reply: dict[str, Any] = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            raise Unavailable(f"{self.note.describe()} did not answer: {exc}") from None
        self.name = str(reply.get("target", self.name))
        return reply

    def _open(self, method: str, path: str, body: Any, timeout: float) -> Any:
        """The response, open; an HTTP error is the failure it carries."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(  # noqa: S310 (the service's own http:// URL)
            self.note.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            return urllib.request.urlopen(request, timeout=timeout)  # noqa: S310
        except urllib.error.HTTPError as exc:
            raise self._failure(exc) from None
        except OSError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Unavailable(f"{self.note.describe()} did not answer: {reason}") from None

    def _failure(self, exc: urllib.error.HTTPError) -> Exception:
        try:
            answer = json.loads(exc.read())
            message, code = str(answer["error"]), int(answer["exit"])
        except (OSError, ValueError, KeyError, TypeError):
            return Unavailable(f"{self.note.describe()} answered HTTP {exc.code}")
        if exc.code == 503:
            return Unavailable(message)
        if code == 2:
            setting, _, text = message.partition(": ")
            return ConfigError(setting, text) if text else ConfigError("query", message)
        return SinkError(message)
