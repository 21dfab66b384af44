"""Ad-hoc SQL in Snowflake's dialect, on every target: parsed, checked, translated.

``ecomm-cdc query`` takes Snowflake's SQL wherever it runs, as ``sql/`` does:

- on Snowflake the text goes as written;
- on DuckDB sqlglot translates it (Snowflake's dialect in, DuckDB's out), and
  ``INFORMATION_SCHEMA.TASK_HISTORY(...)`` reads the local task history;
- on the emulator (fakesnow: it speaks Snowflake's dialect itself) only
  ``TASK_HISTORY`` is rewritten, since there too the service plays the task.

On DuckDB a statement that is not Snowflake SQL at all (it does not parse in
Snowflake's dialect) is read as DuckDB's own, as before this module existed,
so DuckDB's own syntax keeps working there. Whatever parses as Snowflake's but
does not translate is refused in one line naming what failed (exit 2): it is never
guessed at. Every statement that runs passes the read-only checks twice,
before and after translation.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from .. import logs
from ..config import ConfigError
from ..warehouse import sqlfiles
from ..warehouse.scheduler import HISTORY_TABLE

#: What a read-only query may contain nowhere: a write, DDL, or anything kept as raw text.
WRITES = (
    exp.Insert,
    exp.Update,
    exp.Delete,
    exp.Merge,
    exp.Create,
    exp.Drop,
    exp.Alter,
    exp.Command,
    exp.Into,
    exp.Copy,
    exp.TruncateTable,
    exp.Set,
    exp.Use,
    exp.Transaction,
    exp.Commit,
    exp.Rollback,
)

#: TASK_HISTORY's columns that the local history holds, in TASK_HISTORY's order, and where
#: each comes from. Snowflake's other columns (QUERY_ID, QUERY_TEXT, ...) have no local value.
TASK_HISTORY_COLUMNS = {
    "NAME": "name",
    "DATABASE_NAME": "CURRENT_DATABASE()",
    "SCHEMA_NAME": "CURRENT_SCHEMA()",
    "STATE": "state",
    "ERROR_MESSAGE": "error_message",
    "SCHEDULED_TIME": "scheduled_time",
    "QUERY_START_TIME": "query_start_time",
    "COMPLETED_TIME": "completed_time",
}
#: TASK_HISTORY's RESULT_LIMIT: its default and its range, as Snowflake documents them.
RESULT_LIMIT, MAX_RESULT_LIMIT = 100, 10_000
_NAMES = {"snowflake": "Snowflake", "duckdb": "DuckDB"}


class Unparsable(ConfigError):
    """Text that does not parse in the dialect it was read in (exit 2); ``why``: the parser's
    one line."""

    def __init__(self, dialect: str, why: str) -> None:
        name = _NAMES.get(dialect, dialect)
        super().__init__("query", f"the SQL does not parse in {name}'s dialect: {why}")
        self.why = why


class Untranslatable(ConfigError):
    """Snowflake SQL that has no equivalent on this target (exit 2)."""

    def __init__(self, where: str, what: str, why: str) -> None:
        super().__init__("query", f"{what} does not translate to {where}: {why}")


def parse_query(sql: str, dialect: str) -> exp.Query:
    """The one read-only query ``sql`` holds in ``dialect``; else a ConfigError (exit 2)."""
    try:
        with sqlfiles.quiet_sqlglot():
            parsed = [e for e in sqlglot.parse(sql, read=dialect) if e is not None]
    except (sqlglot.errors.SqlglotError, ValueError) as exc:  # never a traceback, whatever
        # sqlglot raises on odd input
        raise Unparsable(dialect, logs.one_line(exc)) from None
    if len(parsed) != 1:
        raise ConfigError("query", f"give exactly one statement (got {len(parsed)})")
    stmt = parsed[0]
    write = stmt.find(*WRITES)
    if not isinstance(stmt, exp.Query) or write is not None:
        found = write or stmt
        kind = type(found).__name__.upper()
        if isinstance(found, exp.Command) or not isinstance(found, WRITES):
            # Kept as raw text, or not a statement sqlglot knows (it reads INSTALL x as a
            # column with an alias): name the keyword as written.
            kind = sql.split(maxsplit=1)[0].upper() if sql.split() else kind
        raise ConfigError("query", f"only a read-only query (SELECT, WITH, UNION) runs; got {kind}")
    return stmt


def for_target(sql: str, dialect: str, local: bool) -> tuple[str, bool]:
    """What runs on the target for the user's ``sql`` (Snowflake's dialect), and whether it
    is a translation (else the text as written).

    ``dialect`` is the session's; ``local`` says the service plays the task there
    (DuckDB, the emulator), so ``TASK_HISTORY`` reads ``cdc_task_history``.
    """
    if dialect == "snowflake" and not local:
        parse_query(sql, "snowflake")
        return sql, False  # Snowflake itself: as written
    try:
        stmt = parse_query(sql, "snowflake")
    except Unparsable as refused:
        if dialect != "duckdb":
            raise
        try:  # not Snowflake SQL at all: DuckDB's own (the caller checks it as such)
            parse_query(sql, "duckdb")
        except Unparsable:
            raise refused from None  # Snowflake's dialect is the one documented
        return sql, False
    where = "DuckDB" if dialect == "duckdb" else "the emulator"
    rewritten = _local_task_history(stmt, where)
    if dialect != "duckdb":  # fakesnow translates Snowflake's dialect itself
        return (sql, False) if rewritten is stmt else (rewritten.sql(dialect="snowflake"), True)
    try:
        with sqlfiles.quiet_sqlglot():
            out = rewritten.sql(dialect="duckdb", unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        raise Untranslatable(where, "the SQL", logs.one_line(exc)) from None
    return out, True


# -- INFORMATION_SCHEMA.TASK_HISTORY(...) where the service plays the task ---------------


def _information_schema_function(node: exp.TableFromRows) -> exp.Anonymous | None:
    """``f`` of ``TABLE([db.]INFORMATION_SCHEMA.f(...))``, else None."""
    dot = node.this
    if not isinstance(dot, exp.Dot) or not isinstance(dot.expression, exp.Anonymous):
        return None
    schema = dot.this
    name = schema.expression if isinstance(schema, exp.Dot) else schema
    if not isinstance(name, exp.Identifier) or name.name.upper() != "INFORMATION_SCHEMA":
        return None
    return dot.expression


def _local_task_history(stmt: exp.Query, where: str) -> exp.Query:
    """``stmt`` with each ``TABLE(INFORMATION_SCHEMA.TASK_HISTORY(...))`` read from the local
    history (a copy; ``stmt`` itself when there is none). Any other INFORMATION_SCHEMA table
    function has no local equivalent and is refused."""
    if not any(_information_schema_function(n) for n in stmt.find_all(exp.TableFromRows)):
        return stmt
    out = stmt.copy()
    for node in list(out.find_all(exp.TableFromRows)):
        fn = _information_schema_function(node)
        if fn is None:
            continue
        if fn.name.upper() != "TASK_HISTORY":
            raise Untranslatable(
                where,
                f"INFORMATION_SCHEMA.{fn.name.upper()}",
                f"only TASK_HISTORY has a local equivalent ({HISTORY_TABLE})",
            )
        alias = node.args.get("alias")
        name = alias.copy() if isinstance(alias, exp.TableAlias) else "TASK_HISTORY"
        node.replace(_history_select(fn, where).subquery(name))
    return out


def _history_select(fn: exp.Anonymous, where: str) -> exp.Select:
    """TASK_HISTORY's rows from ``cdc_task_history``, its arguments honoured as Snowflake does:
    TASK_NAME case-insensitive, ERROR_ONLY the FAILED and CANCELLED runs, and the most recent
    RESULT_LIMIT runs (100 by default)."""
    limit = RESULT_LIMIT
    select = exp.select(
        *(exp.alias_(sqlglot.parse_one(src), name) for name, src in TASK_HISTORY_COLUMNS.items())
    ).from_(HISTORY_TABLE)
    for arg in fn.expressions:
        if not isinstance(arg, exp.Kwarg):
            what = f"TASK_HISTORY({arg.sql('snowflake')})"
            raise Untranslatable(where, what, "it takes named arguments only (NAME => value)")
        key, value = arg.this.name.upper(), arg.expression
        what = f"TASK_HISTORY({key} => {value.sql('snowflake')})"
        if key == "TASK_NAME" and isinstance(value, exp.Literal) and value.is_string:
            wanted = exp.Literal.string(value.name.upper())
            select = select.where(
                exp.EQ(this=exp.Upper(this=exp.column("name")), expression=wanted)
            )
        elif key == "RESULT_LIMIT" and isinstance(value, exp.Literal) and value.is_int:
            limit = int(value.name)
            if not 1 <= limit <= MAX_RESULT_LIMIT:
                raise Untranslatable(where, what, f"RESULT_LIMIT is 1 to {MAX_RESULT_LIMIT:,}")
        elif key == "ERROR_ONLY" and isinstance(value, exp.Boolean):
            if value.this:
                failed = (exp.Literal.string("FAILED"), exp.Literal.string("CANCELLED"))
                select = select.where(exp.column("state").isin(*failed))
        elif key in _KINDS:
            raise Untranslatable(where, what, f"{key} must be {_KINDS[key]}")
        elif key in ("SCHEDULED_TIME_RANGE_START", "SCHEDULED_TIME_RANGE_END"):
            raise Untranslatable(where, what, "filter with WHERE SCHEDULED_TIME ... instead")
        else:
            raise Untranslatable(where, what, f"the local task history has no {key}")
    latest = exp.Ordered(this=exp.column("scheduled_time"), desc=True)
    return select.order_by(latest).limit(limit)


_KINDS = {"TASK_NAME": "a string", "RESULT_LIMIT": "an integer", "ERROR_ONLY": "TRUE or FALSE"}
