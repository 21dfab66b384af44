"""What a Snowflake account keeps beside its tables, played for the emulator: fakesnow has none.

fakesnow serves Snowflake's HTTP API from DuckDB: it runs SQL, and little else a
service meets on a real account. :class:`~.layer.Layer` sits in front of it (an ASGI
app around fakesnow's), and the account plays what matters to ecomm-cdc, as
Snowflake's documentation describes it (the pages named in quotes):

- **Sessions and their transactions.** Every sign-in gets a session id (the
  connector's ``session_id``). ``SHOW TRANSACTIONS`` lists the open transactions of
  the current user (``IN ACCOUNT``: everyone's), and ``SYSTEM$ABORT_TRANSACTION(id)``
  rolls one back ("SHOW TRANSACTIONS", "SYSTEM$ABORT_TRANSACTION"). A client that
  vanishes leaves its session, its open transaction and so its locks behind, as a
  detached transaction on Snowflake ("Transactions": aborting transactions), until
  the transaction is aborted. (fakesnow keeps them for ever; Snowflake aborts one
  that blocks another after 5 idle minutes: not played here.) A statement running
  in a transaction that is aborted fails (000604); the session's next statement
  starts a new transaction.
- **MERGE in its transaction.** fakesnow runs a MERGE as a CREATE TEMPORARY TABLE and DML,
  and the CREATE commits the open transaction; here it is DuckDB's own MERGE INTO,
  translated, inside the session's transaction.
- **Statement timeouts.** ``STATEMENT_TIMEOUT_IN_SECONDS`` (a session parameter given
  at sign-in) cancels a statement that runs longer, with Snowflake's 000630. There
  is no lock wait to time out: DuckDB fails a conflicting write at once
  ("Conflict on update", an HTTP 500) where Snowflake waits up to ``LOCK_TIMEOUT``.
  The connector's own cancel (an abort request after its network timeout) is not
  played, as fakesnow does not: the emulator is a hundred times slower than
  Snowflake per row, and would cancel statements Snowflake ends in a second.
- **Dynamic tables.** ``CREATE DYNAMIC TABLE`` is recorded with its refresh mode:
  ``AUTO`` resolves once, at creation, to FULL where the SELECT list calls a
  current-time function and to INCREMENTAL otherwise; ``INCREMENTAL`` with such a
  function is refused at creation ("Supported queries for dynamic tables"; "Dynamic
  table refresh modes"). fakesnow materialises the table. ``ALTER DYNAMIC TABLE ..
  REFRESH`` recomputes it, and first the dynamic tables it reads (:mod:`.objects`).
  ``SHOW DYNAMIC TABLES`` and ``INFORMATION_SCHEMA.DYNAMIC_TABLE_REFRESH_HISTORY``
  report them, each refresh's action FULL, INCREMENTAL or NO_DATA (nothing changed).
  The emulator recomputes every refresh in full whatever the mode: the action is
  what Snowflake would report, not the work the emulator did.
- **Tasks.** ``CREATE TASK`` (created suspended), ``ALTER TASK .. RESUME | SUSPEND``,
  ``EXECUTE TASK``, ``DROP TASK``, ``SHOW TASKS``, and
  ``INFORMATION_SCHEMA.TASK_HISTORY``, which also lists each resumed task's next run
  as a SCHEDULED row without a query id, as Snowflake does. A resumed task runs its
  body (an ``ALTER DYNAMIC TABLE .. REFRESH``) on its schedule, from the moment it
  was resumed; ``task_speed`` runs the schedule faster (tests). Resuming needs the
  EXECUTE TASK privilege: ``Account(execute_task=False)`` plays a role without it
  (Snowflake's error 091089).

Statements the layer answers itself become a SELECT over VALUES handed to fakesnow,
so the reply has fakesnow's (and so the connector's) shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlglot

from .objects import Objects, Where
from .replies import Columns, Faulted, Refused, now, rows_sql

_LEAD = re.compile(r"^\s*(?:/\*.*?\*/\s*|--[^\n]*(?:\n|$)\s*)*", re.DOTALL)
_END = r"\s*;?\s*$"
_NAME = r"(?:\w+\.){0,2}(?P<name>\w+)"
_SHOW = re.compile(
    r"^SHOW\s+(?P<what>TRANSACTIONS|DYNAMIC\s+TABLES|TASKS)(?P<account>\s+IN\s+ACCOUNT)?"
    r"(?:\s+LIKE\s+'(?P<like>[^']*)')?(?:\s+IN\s+(?:SCHEMA|DATABASE)\s+[\w.]+)?" + _END,
    re.IGNORECASE,
)
_ABORT = re.compile(r"^SELECT\s+SYSTEM\$ABORT_TRANSACTION\s*\(\s*(?P<id>\d+)\s*\)" + _END, re.I)
_CREATE_TASK = re.compile(
    r"^CREATE\s+(?P<replace>OR\s+REPLACE\s+)?TASK\s+(?P<ine>IF\s+NOT\s+EXISTS\s+)?" + _NAME
    + r"\s+(?P<props>.*?)\bAS\s+(?P<body>.+?)" + _END,
    re.IGNORECASE | re.DOTALL,
)  # fmt: skip
_ALTER_TASK = re.compile(
    r"^ALTER\s+TASK\s+(?:IF\s+EXISTS\s+)?" + _NAME + r"\s+(?P<verb>RESUME|SUSPEND)" + _END, re.I
)
_DROP_TASK = re.compile(r"^DROP\s+TASK\s+(?P<ie>IF\s+EXISTS\s+)?" + _NAME + _END, re.I)
_EXECUTE_TASK = re.compile(r"^EXECUTE\s+TASK\s+" + _NAME + _END, re.I)
_CREATE_DT = re.compile(r"^CREATE\s+(?:OR\s+REPLACE\s+)?(?:TRANSIENT\s+)?DYNAMIC\s+TABLE\b", re.I)
_ALTER_DT = re.compile(
    r"^ALTER\s+DYNAMIC\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + _NAME
    + r"\s+(?P<verb>REFRESH|SUSPEND|RESUME|SET\s+TARGET_LAG\s*=\s*(?P<lag>'[^']*'|\w+))" + _END,
    re.I,
)  # fmt: skip
_DROP_DT = re.compile(r"^DROP\s+DYNAMIC\s+TABLE\s+(?P<ie>IF\s+EXISTS\s+)?" + _NAME + _END, re.I)
_MERGE = re.compile(r"^MERGE\s+INTO\b", re.I)
_HISTORY = re.compile(
    r"INFORMATION_SCHEMA\s*\.\s*(?:TASK_HISTORY|DYNAMIC_TABLE_REFRESH_HISTORY)\b", re.I
)
_TRANSACTION_COLUMNS: Columns = [
    ("id", "BIGINT"), ("user", "VARCHAR"), ("session", "BIGINT"), ("name", "VARCHAR"),
    ("started_on", "TIMESTAMP_NTZ"), ("state", "VARCHAR"), ("scope", "BIGINT"),
]  # fmt: skip


@dataclass
class Session:
    id: int
    token: str
    user: str
    parameters: dict[str, Any]
    busy: int = 0  # statements in flight
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    transaction: int | None = None
    started_on: Any = None
    aborted: bool = False  # the statement in flight was cancelled by an abort


def _fakesnow() -> Any:
    return importlib.import_module("fakesnow.server")


def _rollback(conn: Any) -> None:
    with contextlib.suppress(Exception):  # nothing open on the DuckDB side
        conn._duck_conn.rollback()
    # fakesnow begins a transaction only where it thinks none is open: without this, the
    # session's next write would run in autocommit, outside any transaction.
    conn._in_transaction = False


class Account:
    """One emulated account: its sessions and their transactions, its dynamic tables and tasks."""

    def __init__(self, *, execute_task: bool = True, task_speed: float = 1.0) -> None:
        self.objects = Objects(execute_task=execute_task, task_speed=task_speed)
        self.sessions: dict[str, Session] = {}
        self._ids = itertools.count(int(time.time()) * 1000)

    # -- sessions ----------------------------------------------------------------------

    def signed_in(self, token: str, user: str, parameters: dict[str, Any]) -> int:
        session = Session(next(self._ids), token, user.upper(), parameters)
        session.idle.set()
        self.sessions[token] = session
        return session.id

    @staticmethod
    def connection(token: str) -> Any:
        """fakesnow's connection of a session (None once it has gone)."""
        return _fakesnow().sessions.get(token)

    def _where(self, session: Session) -> Where:
        conn = self.connection(session.token)
        return (conn.database or "", conn.schema or "") if conn is not None else ("", "")

    def after_statement(self, session: Session) -> None:
        """Note whether the session's last statement left a transaction open, and since when."""
        conn = self.connection(session.token)
        open_now = bool(conn is not None and getattr(conn, "_in_transaction", False))
        if open_now and session.transaction is None:
            session.transaction, session.started_on = next(self._ids), now()
        elif not open_now:
            session.transaction = session.started_on = None

    def transactions(self, user: str | None) -> list[tuple[Any, ...]]:
        """SHOW TRANSACTIONS: the open ones (of ``user``; None: everyone's)."""
        return [
            (s.transaction, s.user, s.id, str(uuid.UUID(int=s.transaction)), s.started_on,
             "running", 0)
            for s in self.sessions.values()
            if s.transaction is not None and (user is None or s.user == user)
            and self.connection(s.token) is not None
        ]  # fmt: skip

    async def abort(self, caller: Session, transaction: int) -> str:
        """SYSTEM$ABORT_TRANSACTION: roll the transaction back, cancelling its statement."""
        target = next((s for s in self.sessions.values() if s.transaction == transaction), None)
        if target is not None:
            if target.user != caller.user:
                raise Refused(3001, "42501", "Insufficient privileges to operate on transaction.")
            conn = self.connection(target.token)
            if target.busy:
                target.aborted = True
                conn._duck_conn.interrupt()
                await target.idle.wait()
            await asyncio.to_thread(_rollback, conn)
            target.transaction = target.started_on = None
        # One already committed or rolled back is left as it is, and the answer is the same.
        return f"Aborted transaction id: {transaction}"

    # -- statements ----------------------------------------------------------------------

    async def handle(self, session: Session, sql: str) -> str | None:
        """What fakesnow runs instead of ``sql`` (None: ``sql`` itself). Raises :class:`Refused`."""
        text, where, objects = _LEAD.sub("", sql).strip(), self._where(session), self.objects
        if m := _SHOW.match(text):
            what = " ".join(m["what"].upper().split())
            if what == "TRANSACTIONS":
                mine = None if m["account"] else session.user
                return rows_sql(_TRANSACTION_COLUMNS, self.transactions(mine))
            if what == "TASKS":
                return objects.show_tasks(where, m["like"])
            return objects.show_dynamic_tables(where, m["like"])
        if m := _ABORT.match(text):
            answer = await self.abort(session, int(m["id"]))
            return rows_sql([(f"SYSTEM$ABORT_TRANSACTION({m['id']})", "VARCHAR")], [(answer,)])
        if m := _CREATE_TASK.match(text):
            return objects.create_task(where, m)
        if m := _ALTER_TASK.match(text):
            return objects.alter_task(objects.task(where, m["name"]), m["verb"].upper())
        if m := _DROP_TASK.match(text):
            return objects.drop_task(where, m["name"], bool(m["ie"]))
        if m := _EXECUTE_TASK.match(text):
            return objects.execute_now(objects.task(where, m["name"]))
        if _CREATE_DT.match(text):
            objects.create_dynamic(where, text)
            return None  # fakesnow materialises it (a CTAS)
        if m := _ALTER_DT.match(text):
            verb = "SET" if m["lag"] else m["verb"].upper()
            return await objects.alter_dynamic(where, m["name"], verb, m["lag"])
        if m := _DROP_DT.match(text):
            return objects.drop_dynamic(where, m["name"], bool(m["ie"]))
        if _HISTORY.search(text):
            return objects.history(text)
        if _MERGE.match(text):
            return await self._merge(session, text)
        return None

    async def _merge(self, session: Session, text: str) -> str:
        """A MERGE, inside the session's transaction. fakesnow runs one as a CREATE TEMPORARY
        TABLE and DML, and the CREATE commits the open transaction (a batch would be split in
        two); here it is DuckDB's own MERGE INTO, translated, in the transaction as Snowflake
        runs it. Its reply: the rows it changed."""
        conn = self.connection(session.token)
        try:
            duck = sqlglot.transpile(text, read="snowflake", write="duckdb")[0]
        except sqlglot.ParseError as exc:
            raise Refused(1003, "42000", f"SQL compilation error: {exc}") from None

        def run() -> int:
            if not conn._autocommit and not conn._in_transaction:
                conn._duck_conn.begin()
                conn._in_transaction = True
            row = conn._duck_conn.execute(duck).fetchone()
            return int(row[0]) if row else 0

        try:
            changed = await asyncio.to_thread(run)
        except Exception as exc:  # a conflict, a constraint: as fakesnow answers DML that fails
            raise Faulted(f"{type(exc).__name__}: {exc}") from None
        return rows_sql([("number of rows merged", "BIGINT")], [(changed,)])
