"""What the emulated account answers: Snowflake's errors, and rows as a SELECT fakesnow runs."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from sqlglot import exp

Columns = list[tuple[str, str]]

#: Functions whose value depends on when they run: not incremental in a SELECT list.
_NOW_NAMES = frozenset(
    {"SYSDATE", "GETDATE", "NOW", "SYSTIMESTAMP", "LOCALTIMESTAMP", "LOCALTIME",
     "CURRENT_TIMESTAMP", "CURRENT_DATE", "CURRENT_TIME"}
)  # fmt: skip
_NOW_TYPES = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime)


class Refused(Exception):
    """A statement Snowflake would refuse: its error number, SQLSTATE and message."""

    def __init__(self, errno: int, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.errno, self.sqlstate, self.message = errno, sqlstate, message


class Faulted(Exception):
    """A statement that failed as fakesnow fails DML it cannot run (a conflict): HTTP 500."""


def missing(kind: str, name: str) -> Refused:
    """Snowflake's 002003 for an object that is not there."""
    return Refused(
        2003, "02000",
        f"SQL compilation error:\n{kind} '{name.upper()}' does not exist or not authorized.",
    )  # fmt: skip


def now() -> dt.datetime:
    """UTC, naive (as TIMESTAMP_NTZ holds it)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def like(pattern: str | None) -> Callable[[str], bool]:
    """SQL LIKE, case-insensitive, as ``SHOW ... LIKE`` matches names."""
    if pattern is None:
        return lambda _name: True
    rx = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    compiled = re.compile(f"^{rx}$", re.IGNORECASE | re.DOTALL)
    return lambda name: compiled.match(name) is not None


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat(sep=' ')}'"
    return "'" + str(value).replace("'", "''") + "'"


def rows_sql(columns: Columns, rows: list[tuple[Any, ...]]) -> str:
    """A SELECT of ``rows`` under ``columns`` ((name, type) pairs). Names stay lower case, as
    Snowflake names the columns of SHOW's output."""
    names = ", ".join(f'"{n}"' for n, _ in columns)
    if not rows:
        nulls = ", ".join(f'CAST(NULL AS {t}) AS "{n}"' for n, t in columns)
        return f"SELECT {nulls} WHERE FALSE"
    values = ", ".join(
        "(" + ", ".join(f"CAST({_literal(v)} AS {t})" for v, (_, t) in zip(row, columns, strict=True)) + ")"
        for row in rows
    )  # fmt: skip
    return f"SELECT * FROM (VALUES {values}) AS t({names})"  # noqa: S608 (values escaped above)


def status(message: str) -> str:
    """The one-row, one-column reply of a statement that does something."""
    return rows_sql([("status", "VARCHAR")], [(message,)])


def calls_now(select: exp.Expr) -> str | None:
    """The first current-time function in a SELECT list (not in WHERE, HAVING, QUALIFY)."""
    items = select.expressions if isinstance(select, exp.Select) else []
    for item in items:
        for node in item.walk():
            if isinstance(node, _NOW_TYPES):
                return node.sql("snowflake")
            if isinstance(node, exp.Anonymous) and str(node.this).upper() in _NOW_NAMES:
                return str(node.this).upper()
    return None
