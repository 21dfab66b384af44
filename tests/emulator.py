"""The emulator side of the Snowflake tests: a fakesnow server that records and checks.

``Gate`` wraps fakesnow's ASGI app, on the server side of the HTTP
connection: it records every statement that reaches the server (per session),
and, because fakesnow accepts any sign-in, it can check one the way Snowflake
does: a password, or a key-pair JWT verified against the registered public key
(``ALTER USER ... SET RSA_PUBLIC_KEY``). A refusal is Snowflake's own reply
(HTTP 200, ``success: false``, code 390100 or 390144), so the real connector
reacts to it exactly as to Snowflake. Behind it sits the service's own account
layer (``service.sinks.emulator.account``): sessions, transactions and their
aborts, dynamic tables and tasks, which fakesnow lacks (``Gate.account``).
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import gzip
import json
import math
import re
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from service.config import ConnectionSpec
from service.sinks.emulator import ACCOUNT, PASSWORD, USER, Emulator, fakesnow_server
from service.sinks.emulator.account import Account
from service.sinks.emulator.layer import Layer
from service.sinks.snowflake import open_connection

ROWS_SQL = (
    "SELECT order_id, customer_id, order_date, status, amount, product_id, quantity FROM raw_orders"
)
_EPOCH = dt.datetime(1970, 1, 1)


@dataclass
class Recorded:
    token: str
    sql: str
    at: float = field(default_factory=time.monotonic)

    @property
    def verb(self) -> str:
        return self.sql.lstrip().split(None, 1)[0].upper()


@dataclass
class Gate:
    """ASGI middleware in front of the emulator (the account layer, then fakesnow)."""

    app: Any = None
    account: Account = field(default_factory=Account)
    passwords: dict[str, str] | None = None  # user -> password; None: accept any
    public_keys: dict[str, Any] | None = None  # user -> RSAPublicKey
    statements: list[Recorded] = field(default_factory=list)
    logins: list[dict[str, Any]] = field(default_factory=list)
    #: Break one worker's session: the one that sends batch INSERT number ``victim_insert``
    #: hangs ``stall`` seconds, then finds its session gone (HTTP 401, as a lost one would).
    victim_insert: int = 0
    stall: float = 0.0
    victim: str | None = None
    stalled: tuple[float, float] | None = None
    #: Awaited with each statement before fakesnow runs it (it may hold it, or end its session).
    hook: Callable[[Recorded], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        if self.app is None:
            self.app = Layer(fakesnow_server().app, self.account)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
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
        path = scope["path"]
        if path.endswith("/login-request"):
            login = json.loads(raw)
            refusal = self._check_login(login["data"])
            if refusal is not None:
                await _json(send, refusal)
                return
        elif path.endswith("/query-request"):
            token = headers.get("authorization", "")[17:-1]
            rec = Recorded(token, json.loads(raw)["sqlText"])
            self.statements.append(rec)
            if (
                self.victim_insert
                and _is_batch_insert(rec)
                and self.victim is None
                and sum(map(_is_batch_insert, self.statements)) == self.victim_insert
            ):
                self.victim = token
                start = time.monotonic()
                await asyncio.sleep(self.stall)
                fakesnow_server().sessions.pop(token, None)
                self.stalled = (start, time.monotonic())
            if self.hook is not None:
                await self.hook(rec)
        replayed = False

        async def again() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return dict(await receive())

        await self.app(scope, again, send)

    def _check_login(self, data: dict[str, Any]) -> dict[str, Any] | None:
        self.logins.append(
            {
                k: v
                for k, v in data.items()
                if k in ("LOGIN_NAME", "AUTHENTICATOR", "SESSION_PARAMETERS")
            }
        )
        user = str(data.get("LOGIN_NAME", "")).upper()
        if data.get("AUTHENTICATOR") == "SNOWFLAKE_JWT":
            keys = {k.upper(): v for k, v in (self.public_keys or {}).items()}
            if self.public_keys is not None and not _jwt_ok(
                str(data.get("TOKEN", "")), keys.get(user)
            ):
                return _refusal("390144", "JWT token is invalid.")
            return None
        if self.passwords is not None:
            expected = {k.upper(): v for k, v in self.passwords.items()}.get(user)
            if expected is None or data.get("PASSWORD") != expected:
                return _refusal("390100", "Incorrect username or password was specified.")
        return None


def _is_batch_insert(rec: Recorded) -> bool:
    """A batch's INSERT (not the claim's, nor a session's record in cdc_sessions)."""
    return rec.verb == "INSERT" and "INTO raw_orders" in rec.sql


def as_rows(fetched: list[tuple[Any, ...]]) -> dict[str, tuple[object, ...]]:
    """Rows of ROWS_SQL as the stream carries them (epoch seconds, cents); an id twice fails."""
    out: dict[str, tuple[object, ...]] = {}
    for oid, cust, when, status, amount, product, qty in fetched:
        cents = int(Decimal(amount).scaleb(2))
        epoch = int((when - _EPOCH).total_seconds())
        if oid in out:
            raise AssertionError(f"duplicate order_id {oid}")
        out[oid] = (oid, cust, epoch, status, cents, product, qty)
    return out


def end_session(token: str) -> None:
    """What a server does when a client vanishes: its open transaction is rolled back and its
    session ends (fakesnow keeps both forever otherwise); the client's next request gets 401."""
    conn = fakesnow_server().sessions.pop(token, None)
    if conn is not None:
        conn.rollback()


def committed_rows(sql: str, database: str = "ECOMM") -> list[tuple[Any, ...]]:
    """What another session sees right now (run inside the server: no HTTP round trip)."""
    conn = fakesnow_server().shared_fs.connect(database, "PUBLIC")
    try:
        return list(conn.cursor().execute(sql).fetchall())
    finally:
        conn.close()


def _refusal(code: str, message: str) -> dict[str, Any]:
    return {
        "data": {"nextAction": "RETRY_LOGIN", "authnMethod": "PASSWORD"},
        "code": code,
        "message": message,
        "success": False,
        "headers": None,
    }


async def _json(send: Any, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _b64(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def _jwt_ok(token: str, public_key: Any) -> bool:
    """RS256 signature check, as Snowflake does with the user's RSA_PUBLIC_KEY."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = token.split(".")
    if public_key is None or len(parts) != 3:
        return False
    try:
        public_key.verify(
            _b64(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return False
    return True


class Server:
    """A running emulator with its gate; ``env()`` is what a CLI run needs to reach it."""

    def __init__(self, gate: Gate | None = None) -> None:
        self.gate = gate or Gate()
        if self.gate.passwords is not None:  # the tests' own reads sign in as the emulator's user
            self.gate.passwords.setdefault(USER, PASSWORD)
        self.emulator = Emulator(app=self.gate)

    def __enter__(self) -> Server:
        self.emulator.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.emulator.stop()

    @property
    def port(self) -> int:
        return self.emulator.port

    def env(self, port: int | None = None, **extra: str) -> dict[str, str]:
        return {
            "SNOWFLAKE_ACCOUNT": ACCOUNT,
            "SNOWFLAKE_USER": "cdc_service",
            "SNOWFLAKE_PASSWORD": "emulator-pass",
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": str(port or self.port),
            "SNOWFLAKE_PROTOCOL": "http",
            "SNOWFLAKE_LOGIN_TIMEOUT": "20",
            "SNOWFLAKE_NETWORK_TIMEOUT": "10",
            **extra,
        }

    def rows(self, database: str = "ECOMM") -> dict[str, tuple[object, ...]]:
        """``raw_orders`` as (order_id, customer_id, epoch s, status, cents, product, qty)."""
        conn = open_connection(self.emulator.spec(database=database), autocommit=True, tag="test")
        try:
            cur = conn.cursor()
            cur.execute(ROWS_SQL)
            return as_rows(cur.fetchall())
        finally:
            conn.close()

    def query(self, sql: str, database: str = "ECOMM") -> list[tuple[Any, ...]]:
        conn = open_connection(self.emulator.spec(database=database), autocommit=True, tag="test")
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return list(cur.fetchall())
        finally:
            conn.close()


# -- statements per batch, as the server saw them --------------------------------------


@dataclass
class BatchSeen:
    """The statements one worker session sent between two COMMITs."""

    verbs: list[str]
    insert_rows: list[int]
    merge_rows: list[int]  # per MERGE: its rows (updated and deleted orders)
    delete_ids: list[int]  # per MERGE: the deleted orders among them

    @property
    def round_trips(self) -> int:
        return len(self.verbs)


_ROW = re.compile(r"\('ORD-")
_DELETED = re.compile(r", 'd'\)")


def batches_seen(statements: list[Recorded]) -> list[BatchSeen]:
    """Group each session's statements into transactions that wrote a checkpoint."""
    by_token: dict[str, list[Recorded]] = {}
    for st in statements:
        by_token.setdefault(st.token, []).append(st)
    out: list[BatchSeen] = []
    for sts in by_token.values():
        current: list[Recorded] = []
        for st in sts:
            current.append(st)
            if st.verb == "COMMIT":
                if any(_is_checkpoint(s) for s in current):
                    out.append(_summarise(current))
                current = []
    return out


def _is_checkpoint(st: Recorded) -> bool:
    """The batch's checkpoint UPDATE (a plain UPDATE: it stays inside the transaction)."""
    return st.sql.lstrip().startswith("UPDATE cdc_checkpoints SET last_seq")


def _summarise(sts: list[Recorded]) -> BatchSeen:
    seen = BatchSeen([], [], [], [])
    for st in sts:
        if _is_checkpoint(st):
            seen.verbs.append("CHECKPOINT")
            continue
        seen.verbs.append(st.verb)
        if st.verb == "INSERT":
            seen.insert_rows.append(len(_ROW.findall(st.sql)))
        elif st.verb == "MERGE":
            seen.merge_rows.append(len(_ROW.findall(st.sql)))
            seen.delete_ids.append(len(_DELETED.findall(st.sql)))
    return seen


def check_bulk(seen: list[BatchSeen], chunk: int) -> Iterator[str]:
    """Every way a batch's statements are not bulk; nothing yielded = all bulk."""
    for i, b in enumerate(seen):
        ins, merged = sum(b.insert_rows), sum(b.merge_rows)
        if len(b.insert_rows) > math.ceil(ins / chunk):
            yield f"batch {i}: {len(b.insert_rows)} INSERTs for {ins} rows (chunk {chunk})"
        if len(b.merge_rows) > math.ceil(merged / chunk):
            yield f"batch {i}: {len(b.merge_rows)} MERGEs for {merged} rows"
        if b.verbs[-2:] != ["CHECKPOINT", "COMMIT"] or b.verbs.count("COMMIT") != 1:
            yield f"batch {i}: not one checkpoint UPDATE then COMMIT: {b.verbs}"
        others = set(b.verbs) - {"INSERT", "MERGE", "CHECKPOINT", "COMMIT"}
        if others:
            yield f"batch {i}: unexpected statements {sorted(others)}"


class Outliving:
    """``ecomm-cdc emulator`` in a process of its own: its sessions outlive the processes
    killed against it, as Snowflake's do (an in-process emulator dies with its test's
    writers only when they share its process; this one never does)."""

    def __init__(self, *flags: str) -> None:
        self.flags = flags
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Outliving:
        from .conftest import spawn

        proc = self._proc = spawn("emulator", "--port", "0", *self.flags)
        assert proc.stdout is not None
        for line in proc.stdout:
            if '"emulator.listening"' in line:
                self.port = int(json.loads(line)["port"])
                return self
        raise AssertionError(f"the emulator did not start: {proc.communicate()}")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.communicate(timeout=30)

    def env(self, **extra: str) -> dict[str, str]:
        return Server().env(self.port, **extra)

    def spec(self) -> ConnectionSpec:
        return Emulator(port=self.port).spec()

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        conn = open_connection(self.spec(), autocommit=True, tag="test")
        try:
            cur = conn.cursor()
            cur.execute(sql)
            return list(cur.fetchall())
        finally:
            conn.close()

    def rows(self) -> dict[str, tuple[object, ...]]:
        return as_rows(self.query(ROWS_SQL))
