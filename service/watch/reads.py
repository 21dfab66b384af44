"""What ``report``, ``tasks`` and ``query`` read: one set of functions, two callers.

A command that opens the target itself calls these on its own session; a
running service calls the very same ones on a cursor of its own (see
:mod:`service.watch.api`) and sends the result over HTTP. Either way the command
renders the result with the same code, so the output is the same.

Ad-hoc SQL is Snowflake's dialect on every target (:mod:`service.watch.dialect`
translates it), and read-only by five locks, any one of which would refuse a
write: sqlglot's parse (one query, no write anywhere in it; as written, and
again once translated), DuckDB's own parser (one statement, of type SELECT), a
``READ ONLY`` transaction that is rolled back, and a database opened with
``enable_external_access = false`` (no files, no network, no extensions from
SQL). A row limit and a time limit bound its cost.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .. import logs
from ..config import ConfigError
from ..sinks.base import SinkError, SqlSession
from ..warehouse.scheduler import history
from . import dialect as dialects

#: Rows a query returns at most (``more`` says when there were others).
QUERY_ROWS = 1000


@dataclass(frozen=True, slots=True)
class Rows:
    """A result: column names, the rows, and whether rows were left out at the limit."""

    columns: list[str]
    rows: list[tuple[Any, ...]]
    more: bool = field(default=False)


class QueryTimeout(SinkError):
    """A query ran past its time limit and was interrupted (exit 1)."""


def read_only(sql: str, dialect: str) -> str:
    """``sql`` if it is one read-only query in ``dialect``; else a ConfigError (exit 2)."""
    dialects.parse_query(sql, dialect)
    return sql


def duck_cursor(session: SqlSession) -> Any:
    """The DuckDB cursor under ``session``, or None for another driver."""
    from ..sinks.duckdb import DuckSession

    return session.con if isinstance(session, DuckSession) else None


def checked(session: SqlSession, sql: str, local: bool | None = None) -> str:
    """The statement to run for the user's ``sql`` (Snowflake's dialect, translated for the
    target by :mod:`service.watch.dialect`), once it passed ``read_only`` in the target's own
    dialect, and on DuckDB its own parser's word too: one statement, a SELECT.

    ``local``: the service plays the refresh task on this target (default: on DuckDB).
    """
    local = session.dialect == "duckdb" if local is None else local
    run, translated = dialects.for_target(sql, session.dialect, local)
    try:
        read_only(run, session.dialect)
        con = duck_cursor(session)
        if con is not None:
            _one_select(con, run)
    except dialects.Unparsable as exc:
        if translated:  # Snowflake SQL that came out as something the target cannot read
            where = "DuckDB" if session.dialect == "duckdb" else "the emulator"
            raise dialects.Untranslatable(where, "the SQL", exc.why) from None
        raise
    return run


def _one_select(con: Any, sql: str) -> None:
    """DuckDB's own parser: exactly one statement, of type SELECT."""
    import duckdb

    try:
        found = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise dialects.Unparsable("duckdb", logs.one_line(exc)) from None
    kinds = [s.type.name for s in found]
    if kinds != ["SELECT"]:
        raise ConfigError(
            "query",
            f"only a read-only query (SELECT, WITH, UNION) runs; got {', '.join(kinds)}",
        )


@contextlib.contextmanager
def read_only_transaction(session: SqlSession) -> Iterator[SqlSession]:
    """A transaction that is always rolled back; on DuckDB, one that cannot write at all."""
    if duck_cursor(session) is None:
        session.begin()
    else:
        session.execute("BEGIN TRANSACTION READ ONLY")
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):
            session.rollback()


@contextlib.contextmanager
def _time_limit(session: SqlSession, seconds: float | None) -> Iterator[threading.Event]:
    """Interrupt the DuckDB statement after ``seconds``; the event says it happened. (A
    Snowflake session of the service is bounded by the server: STATEMENT_TIMEOUT_IN_SECONDS.)"""
    fired = threading.Event()
    con = duck_cursor(session)
    if not seconds or con is None:
        yield fired
        return

    def interrupt() -> None:
        fired.set()
        con.interrupt()

    timer = threading.Timer(seconds, interrupt)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


def _refusal(exc: BaseException) -> ConfigError | None:
    """DuckDB refusing a query that tried to reach a file or write: the user's input, exit 2."""
    kind, text = type(exc).__name__, str(exc)
    if kind == "PermissionException" or (kind == "TransactionException" and "read-only" in text):
        return ConfigError("query", f"refused: {logs.one_line(exc)}")
    return None


def query(
    session: SqlSession,
    sql: str,
    limit: int = QUERY_ROWS,
    seconds: float | None = None,
    local: bool | None = None,
) -> Rows:
    """One read-only query, at most ``limit`` rows, interrupted after ``seconds`` (DuckDB).

    ``sql`` is Snowflake's dialect on every target (see :func:`checked`).
    """
    sql = checked(session, sql, local)
    with _time_limit(session, seconds) as fired:
        try:
            with read_only_transaction(session):
                cur = session.execute(sql)
                columns = [d[0] for d in cur.description]
                rows = [tuple(r) for r in cur.fetchmany(limit + 1)]
        except Exception as exc:
            # DuckDB interrupted by the timer, or Snowflake's own statement timeout (000630).
            if fired.is_set() or (seconds and getattr(exc, "errno", None) == 630):
                raise QueryTimeout(
                    f"query: stopped after its time limit of {seconds:g} s (CDC_QUERY_TIMEOUT)"
                ) from None
            refused = _refusal(exc)
            if refused is not None:
                raise refused from None
            raise
    return Rows(columns, rows[:limit], more=len(rows) > limit)


def aggregated(session: SqlSession) -> Rows:
    """orders_aggregated, one row per month, in month order (column names in lower case)."""
    cur = session.execute("SELECT * FROM orders_aggregated ORDER BY order_year, order_month")
    return Rows([d[0].lower() for d in cur.description], [tuple(r) for r in cur.fetchall()])


def tasks(session: SqlSession, local: bool, limit: int = 100) -> Rows:
    """The refresh task's last runs, oldest first."""
    columns, rows = history(session, local, limit)
    return Rows(columns, rows)
