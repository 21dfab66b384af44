"""The ASGI app in front of fakesnow's: sign-ins get a session id, statements go through the
:class:`~.account.Account` first (which may answer them, rewrite them, or refuse them)."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from .account import Account, Session
from .replies import Faulted, Refused

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass
class Sent:
    """A reply of the inner app, held back so that it can be replaced."""

    status: int = 200
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Sent:
        body = json.dumps(payload, default=str).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        return cls(200, headers, body)

    async def replay(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def _error(errno: int, sqlstate: str, message: str) -> Sent:
    """Snowflake's (and fakesnow's) reply to a statement that failed."""
    code = f"{errno:06d}"
    return Sent.of(
        {"data": {"errorCode": code, "sqlState": sqlstate}, "code": code, "message": message,
         "success": False}
    )  # fmt: skip


class Layer:
    """ASGI middleware in front of fakesnow's app: :class:`Account` answers what fakesnow cannot."""

    def __init__(self, app: Any, account: Account | None = None) -> None:
        self.app = app
        self.account = account or Account()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and scope["method"] == "POST":
            if path.endswith("/login-request"):
                await self._login(scope, await _read(receive), send)
                return
            if path.endswith("/query-request"):
                await self._query(scope, await _read(receive), send)
                return
        await self.app(scope, receive, send)

    async def _login(self, scope: Scope, body: bytes, send: Send) -> None:
        data = json.loads(_plain(scope, body))["data"]
        sent = await _call(self.app, scope, body)
        reply = json.loads(sent.body or b"{}")
        if sent.status != 200 or not reply.get("success"):
            await sent.replay(send)
            return
        reply["data"]["sessionId"] = self.account.signed_in(
            reply["data"]["token"],
            str(data.get("LOGIN_NAME", "")),
            dict(data.get("SESSION_PARAMETERS") or {}),
        )
        await Sent.of(reply).replay(send)

    async def _query(self, scope: Scope, body: bytes, send: Send) -> None:
        token = _headers(scope).get("authorization", "")[17:-1]
        session = self.account.sessions.get(token)
        if session is None:  # not signed in through this layer: fakesnow answers (a 401)
            await (await _call(self.app, scope, body)).replay(send)
            return
        request = json.loads(_plain(scope, body))
        session.busy += 1
        session.idle.clear()
        try:
            try:
                instead = await self.account.handle(session, request["sqlText"])
            except Refused as exc:
                await _error(exc.errno, exc.sqlstate, exc.message).replay(send)
                return
            except Faulted as exc:
                self.account.after_statement(session)
                body500 = {"data": None, "code": "261000", "message": str(exc), "success": False}
                await Sent(
                    500, [(b"content-type", b"application/json")], json.dumps(body500).encode()
                ).replay(send)
                return
            if instead is not None:
                request["sqlText"] = instead
                request.pop("bindings", None)
                body = json.dumps(request).encode()
                scope = _plain_scope(scope, len(body))
            sent = await self._timed(session, scope, body)
            self.account.after_statement(session)
            if session.aborted:
                session.aborted = False
                sent = _error(604, "57014", "SQL execution canceled")
            await sent.replay(send)
        finally:
            session.busy -= 1
            if not session.busy:
                session.idle.set()

    async def _timed(self, session: Session, scope: Scope, body: bytes) -> Sent:
        """The statement, cancelled past the session's STATEMENT_TIMEOUT_IN_SECONDS."""
        limit = float(session.parameters.get("STATEMENT_TIMEOUT_IN_SECONDS") or 0)
        if limit <= 0:
            return await _call(self.app, scope, body)
        fired = False

        def cancel() -> None:
            nonlocal fired
            fired = True
            conn = self.account.connection(session.token)
            if conn is not None:
                conn._duck_conn.interrupt()

        handle = asyncio.get_running_loop().call_later(limit, cancel)
        try:
            sent = await _call(self.app, scope, body)
        finally:
            handle.cancel()
        if fired:
            return _error(
                630, "57014",
                f"Statement reached its statement or warehouse timeout of {limit:g} second(s) "
                "and was canceled.",
            )  # fmt: skip
        return sent


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode().lower(): v.decode() for k, v in scope["headers"]}


async def _read(receive: Receive) -> bytes:
    body = b""
    while True:
        msg = await receive()
        body += bytes(msg.get("body", b""))
        if not msg.get("more_body"):
            return body


def _plain(scope: Scope, body: bytes) -> bytes:
    return gzip.decompress(body) if _headers(scope).get("content-encoding") == "gzip" else body


def _plain_scope(scope: Scope, length: int) -> Scope:
    """The request's headers for a body sent again uncompressed, of ``length`` bytes."""
    kept = [
        (k, v)
        for k, v in scope["headers"]
        if k.lower() not in (b"content-encoding", b"content-length")
    ]
    return {**scope, "headers": [*kept, (b"content-length", str(length).encode())]}


async def _call(app: Any, scope: Scope, body: bytes) -> Sent:
    """The inner app's reply to a request with ``body``."""
    sent, given = Sent(), False

    async def receive() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the request is read once; no disconnect is played
        return {"type": "http.disconnect"}

    async def capture(msg: Message) -> None:
        if msg["type"] == "http.response.start":
            sent.status, sent.headers = msg["status"], list(msg.get("headers", []))
        elif msg["type"] == "http.response.body":
            sent.body += msg.get("body", b"")

    await app(scope, receive, capture)
    return sent
