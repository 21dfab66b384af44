"""Connections to Snowflake: sign-in, sending a statement, and a session for ad-hoc SQL.

Everything here talks to the real connector (``snowflake-connector-python``),
paramstyle ``pyformat``: values are bound (rendered) by the connector, never
formatted into SQL by us. Statements are written with ``?`` placeholders, as
for every target, and turned into ``%s`` here (:func:`pyformat`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import snowflake.connector

from ... import logs, retry
from ...config import ConnectionSpec
from ..base import Dialect, SinkError
from . import errors
from .sql import Statement, pyformat

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection
    from snowflake.connector.cursor import SnowflakeCursor

log = logs.get("sink")
T = TypeVar("T")


def retrying(policy: retry.RetryPolicy, fn: Callable[[], T], doing: str, phase: retry.Phase) -> T:
    """:func:`service.retry.retrying` with the connector's errors classified."""
    return retry.retrying(
        policy,
        fn,
        doing,
        phase=phase,
        transient=errors.is_transient,
        describe=errors.describe,
        terminal=errors.terminal,
    )


class LoginTimeout(TimeoutError):
    """No answer to the sign-in within the login timeout."""


class NoReply(ConnectionError):
    """A statement sent without the connector's retries got no usable reply: outcome unknown."""


def execute(cur: Any, st: Statement) -> None:
    """Run one statement. One that is not replayable is sent once, never re-sent by the connector.

    The connector re-sends a request whose reply was lost; for an INSERT that
    would add the rows twice in the transaction (Snowflake does not enforce the
    primary key). With ``_no_retry`` (the cursor's documented switch) a lost
    reply surfaces here instead, and the writer settles it by reading back the
    checkpoint. In that mode the connector may also swallow an HTTP error and
    hand back an empty reply, which it then fails to parse: that is a lost
    reply too.
    """
    run = cur.executemany if st.many else cur.execute
    sql = st.sql
    if st.replayable:
        run(sql, st.params)
        return
    _check_binding(st)
    try:
        run(sql, st.params, _no_retry=True)
    except (KeyError, TypeError) as exc:
        raise NoReply(f"no usable reply to {st.verb} ({type(exc).__name__}: {exc})") from None


def _check_binding(st: Statement) -> None:
    """Raise the connector's own TypeError now if placeholders and values do not match.

    Inside :func:`execute`'s ``_no_retry`` call it would pass for a lost reply and be
    retried; here it is what it is, a bug of ours, and terminal.
    """
    rows = st.params[:1] if st.many else [st.params] if st.params else []
    for values in rows:
        st.sql % tuple(None for _ in values)  # the formatting is the check


def open_connection(
    spec: ConnectionSpec, *, autocommit: bool, tag: str, statement_timeout: float | None = None
) -> SnowflakeConnection:
    """Sign in, giving up after ``spec.login_timeout`` seconds whatever the network does.

    The connector bounds its own login retries by the login timeout, but a
    single request can hang past it (a black-holed address): the sign-in runs
    on a daemon thread, and a late success is closed.
    """
    box: dict[str, Any] = {}
    done, abandoned = threading.Event(), threading.Event()
    kwargs = spec.kwargs(autocommit, tag, statement_timeout)

    def login() -> None:
        try:
            conn = snowflake.connector.connect(**kwargs)
        except BaseException as exc:
            box["error"] = exc
        else:
            box["conn"] = conn
            if abandoned.is_set():
                close_quietly(conn)
        finally:
            done.set()

    threading.Thread(target=login, name=f"snowflake-login-{tag}", daemon=True).start()
    if not done.wait(spec.login_timeout):
        abandoned.set()
        if "conn" in box:
            close_quietly(box["conn"])
        raise LoginTimeout(f"no answer from {spec.where} within {spec.login_timeout:g} s")
    if "error" in box:
        raise box["error"]
    conn: SnowflakeConnection = box["conn"]
    return conn


def close_quietly(conn: Any, *, rollback: bool = False) -> None:
    """Close a connection, ending its open transaction first when ``rollback`` (a session that
    still answers): a server may keep a vanished client's transaction, and its locks, open
    until the session expires (Snowflake), or for ever (the emulator)."""
    if rollback:
        try:
            conn.rollback()
        except Exception as exc:
            log.debug("sink.rollback_failed", error=logs.one_line(exc))
    try:
        conn.close(retry=False)
    except Exception as exc:  # a broken connection cannot say goodbye; the server times it out
        log.debug("sink.close_failed", error=logs.one_line(exc))


def signin_error(spec: ConnectionSpec, exc: BaseException) -> SinkError:
    if isinstance(exc, SinkError):
        return exc
    who = f"account {spec.account!r} as user {spec.user!r} at {spec.where}"
    if errors.is_auth(exc):
        return errors.terminal(exc, f"sign-in refused for {who}")
    if isinstance(exc, LoginTimeout) or errors.is_transient(exc):
        return SinkError(
            f"cannot reach Snowflake {who} within the login timeout "
            f"({spec.login_timeout:g} s, SNOWFLAKE_LOGIN_TIMEOUT): {logs.one_line(exc)}"
        )
    return errors.terminal(exc, f"cannot sign in to {who}")


class SnowSession:
    """A Snowflake connection as a :class:`SqlSession` (``?`` placeholders, pyformat).

    Its statements are bounded by the session's STATEMENT_TIMEOUT_IN_SECONDS on the server,
    whether the client is still there or not. (The connector also cancels a statement after
    its network timeout, SNOWFLAKE_NETWORK_TIMEOUT, while it waits; a ``timeout`` passed to
    it would also become its budget for re-sending a request, hiding faults from the retry
    policy: none is passed.)
    """

    dialect: Dialect = "snowflake"

    def __init__(self, conn: SnowflakeConnection, *, autocommit: bool) -> None:
        self.conn = conn
        self._autocommit = autocommit

    def execute(self, sql: str, params: Sequence[Any] = ()) -> SnowflakeCursor:
        cur = self.conn.cursor()
        if params:
            cur.execute(pyformat(sql), list(params))
        else:
            cur.execute(sql)
        return cur

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        return int(self.execute(sql, params).rowcount or 0)

    def begin(self) -> None:
        if self._autocommit:  # with autocommit off a transaction is always open
            self.execute("BEGIN")

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        close_quietly(self.conn)
