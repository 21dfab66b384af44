"""The warehouse layers (orders_derived, orders_aggregated), their refresh, and the local task.

``sql/`` is the one source: on Snowflake its files run as written (dynamic
tables, the task ``refresh_orders_agg``, resumed). Where dynamic tables and
tasks are not real (DuckDB, the emulator), the SELECT of each dynamic table is
taken from the parsed file, translated by sqlglot, and materialised as a plain
table; the service's own scheduler then plays the task and records each run in
``cdc_task_history``, the local ``TASK_HISTORY``.

Everything that touches a database takes a DB-API connection, its dialect
("duckdb" or "snowflake"), whether the warehouse is local, and the validated
names; ``prepare`` and ``schedule`` are the two entry points the runner calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import TokenType, exp
from sqlglot.dialects.snowflake import Snowflake

from . import logs, sqlfiles
from .config import IDENTIFIER
from .sinks.base import SinkError, TargetConfigError

log = logs.get("warehouse")

TASK = "REFRESH_ORDERS_AGG"
HISTORY_TABLE = "cdc_task_history"
LAYER_FILES = "01"  # the dynamic tables
TASK_FILES = "02"  # the task (Snowflake only)
LOCAL_FILES = "03"  # what only a local warehouse needs (the task history)
CANCEL_WAIT = 10.0  # seconds a cancelled scheduler waits for the refresh in flight
#: Rendered into the files where no warehouse is configured (locally it is never used).
_LOCAL_NAMES = {"warehouse": "COMPUTE_WH", "database": "ECOMM", "schema": "PUBLIC"}
_TASK_RE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?TASK\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s+"
    r"(?P<props>.*?)\bAS\s+(?P<body>.+)$",
    re.IGNORECASE | re.DOTALL,
)
HISTORY_COLUMNS = (
    "name",
    "scheduled_time",
    "query_start_time",
    "completed_time",
    "state",
    "error_message",
    "rows_written",
)
_RECORD_SQL = (
    "INSERT INTO cdc_task_history (name, scheduled_time, query_start_time, completed_time, "
    "state, error_message, rows_written) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


# -- sql/ ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layer:
    """One dynamic table of ``sql/``: its name and its SELECT (Snowflake's dialect)."""

    name: str
    select: exp.Query
    file: str = ""

    def local_sql(self, dialect: str) -> str:
        """``CREATE OR REPLACE TABLE name AS <the SELECT, translated>``."""
        create = exp.Create(
            this=exp.to_table(self.name), kind="TABLE", replace=True, expression=self.select.copy()
        )
        return create.sql(dialect=dialect)


def checked_names(names: dict[str, str]) -> dict[str, str]:
    """The names to render into ``sql/``, each a plain identifier (they are pasted into SQL)."""
    out = {**_LOCAL_NAMES, **{k: v for k, v in names.items() if v}}
    for key, value in out.items():
        if not IDENTIFIER.match(value):
            raise TargetConfigError(f"SNOWFLAKE_{key.upper()}", f"{value!r} is not an identifier")
    return out


def _is_dynamic(e: exp.Expression) -> bool:
    props = e.args.get("properties")
    return props is not None and any(isinstance(p, exp.DynamicProperty) for p in props.expressions)


def layers(names: dict[str, str] | None = None) -> list[Layer]:
    """The dynamic tables of ``sql/``, in file order (each may read the ones before it)."""
    found: list[Layer] = []
    for name, text in sqlfiles.files():
        if not name.startswith(LAYER_FILES):
            continue
        for e in sqlfiles.parse(sqlfiles.render(text, checked_names(names or {}))):
            if isinstance(e, exp.Create) and _is_dynamic(e):
                if not isinstance(e.expression, exp.Query):
                    raise ValueError(f"{name}: dynamic table {e.this.name} has no AS SELECT")
                found.append(Layer(e.this.name, e.expression, name))
    return found


def split(text: str) -> list[str]:
    """The statements of a file, as written (Snowflake's tokenizer finds the semicolons)."""
    out: list[str] = []
    begin = 0
    for tok in Snowflake().tokenize(text):
        if tok.token_type == TokenType.SEMICOLON:
            out.append(text[begin : tok.start])
            begin = tok.end + 1
    out.append(text[begin:])
    return [s.strip() for s in out if Snowflake().tokenize(s)]


@contextlib.contextmanager
def quiet_sqlglot() -> Iterator[None]:
    """sqlglot warns that it keeps TASK statements as raw commands: known, and not news."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def snowflake_ddl(names: dict[str, str]) -> list[str]:
    """What ``prepare`` runs on Snowflake: the layer and task files, rendered, as written."""
    rendered = checked_names(names)
    out: list[str] = []
    for name, text in sqlfiles.files():
        if name.startswith((LAYER_FILES, TASK_FILES)):
            text = sqlfiles.render(text, rendered)
            with quiet_sqlglot():
                sqlfiles.parse(text)  # refuse to send what does not parse
            out += split(text)
    return out


def task_definition(names: dict[str, str] | None = None) -> dict[str, str]:
    """The task of ``sql/``: name, its properties (WAREHOUSE, SCHEDULE) and body.

    sqlglot has no grammar for tasks (it keeps them as a raw Command), so the
    CREATE TASK is taken apart here, the one place that needs it.
    """
    for name, text in sqlfiles.files():
        if not name.startswith(TASK_FILES):
            continue
        for stmt in split(sqlfiles.render(text, checked_names(names or {}))):
            body = "\n".join(ln for ln in stmt.splitlines() if not ln.lstrip().startswith("--"))
            m = _TASK_RE.match(body.strip())
            if m:
                props = dict(
                    (k.upper(), v.strip().strip("'"))
                    for k, v in re.findall(r"(\w+)\s*=\s*('[^']*'|\w+)", m["props"])
                )
                return {"name": m["name"], "body": " ".join(m["body"].split()), **props}
    raise ValueError("sql/ defines no task")


def refresh_statement() -> str:
    """What ``ecomm-cdc refresh`` runs on Snowflake: the body of the task."""
    return task_definition()["body"]


def local_ddl(dialect: str) -> list[str]:
    """The local-only tables (the task history), translated."""
    return sqlfiles.statements(LOCAL_FILES, checked_names({}), dialect=dialect)


# -- against a connection -------------------------------------------------------


def execute(con: Any, sql: str, params: Sequence[Any] | None = None) -> Any:
    """Execute on the connection's own session, and return something to fetch from.

    A DuckDB connection executes itself (its ``cursor()`` would be another
    session, outside the transaction); a Snowflake cursor shares its session.
    """
    cur = con if hasattr(con, "execute") else con.cursor()
    if params is None:
        return cur.execute(sql) or cur
    return cur.execute(sql, params) or cur


def _rollback(con: Any) -> None:
    with contextlib.suppress(Exception):  # the transaction may already be gone
        execute(con, "ROLLBACK")


def bind(sql: str, dialect: str) -> str:
    """``sql`` written with ``?`` placeholders, for the driver: DuckDB binds qmark, the
    Snowflake connector pyformat (its qmark binding is server-side, which the emulator mishandles).
    """
    return sql if dialect == "duckdb" else sql.replace("?", "%s")


def apply_ddl(con: Any, dialect: str, local: bool, names: dict[str, str]) -> list[str]:
    """Create the layers (and the task, or the local task history). Idempotent.

    Returns the statements run. Locally the layers are materialised at once.
    """
    if not local:
        done = []
        for stmt in snowflake_ddl(names):
            execute(con, stmt)
            done.append(stmt)
        return done
    done = list(local_ddl(dialect))
    for stmt in done:
        execute(con, stmt)
    materialize(con, dialect)
    return done + [layer.local_sql(dialect) for layer in layers()]


def materialize(con: Any, dialect: str) -> int:
    """Rebuild every layer from its translated SELECT, in one transaction. Returns rows written.

    A reader sees the old tables until the commit, never an empty one.
    """
    rows = 0
    execute(con, "BEGIN")
    try:
        for layer in layers():
            execute(con, layer.local_sql(dialect))
            count = exp.select("COUNT(*)").from_(layer.name).sql(dialect=dialect)
            rows += int(execute(con, count).fetchone()[0])
        execute(con, "COMMIT")
    except BaseException:
        _rollback(con)
        raise
    return rows


def refresh(con: Any, dialect: str, local: bool) -> int | None:
    """Refresh the layers now: locally rebuild them; on Snowflake, refresh the dynamic tables."""
    if local:
        return materialize(con, dialect)
    execute(con, refresh_statement())
    return None


@dataclass(frozen=True, slots=True)
class Run:
    """One run of the (local) task, as recorded in ``cdc_task_history``."""

    name: str
    scheduled: dt.datetime
    started: dt.datetime
    completed: dt.datetime
    state: str  # SUCCEEDED or FAILED, as in TASK_HISTORY
    error: str | None
    rows: int | None


def record(con: Any, dialect: str, run: Run) -> None:
    execute(
        con,
        bind(_RECORD_SQL, dialect),
        (run.name, run.scheduled, run.started, run.completed, run.state, run.error, run.rows),
    )


def history_sql(local: bool, limit: int = 100) -> str:
    """The task's last ``limit`` runs, oldest first: local history table, or TASK_HISTORY."""
    cols = ", ".join(HISTORY_COLUMNS)
    if local:
        return (
            f"SELECT {cols} FROM (SELECT {cols} FROM {HISTORY_TABLE} "  # noqa: S608 (constants)
            f"ORDER BY scheduled_time DESC LIMIT {int(limit)}) AS h ORDER BY scheduled_time"
        )
    cols = ", ".join(HISTORY_COLUMNS[:-1])
    return (
        f"SELECT {cols} FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY("  # noqa: S608 (constants)
        f"TASK_NAME => '{TASK}', RESULT_LIMIT => {int(limit)})) ORDER BY scheduled_time"
    )


def history(con: Any, local: bool, limit: int = 100) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Column names (lower case) and rows of the task's history."""
    cur = execute(con, history_sql(local, limit))
    return [d[0].lower() for d in cur.description], [tuple(r) for r in cur.fetchall()]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def run_task(connect: Callable[[], Any], dialect: str, scheduled: dt.datetime) -> Run:
    """One run of the local task on its own connection: refresh, then record the outcome.

    A failure is recorded (and returned), never raised: the schedule goes on.
    """
    started = _utcnow()
    con = None
    rows: int | None = None
    error: str | None = None
    try:
        con = connect()
        rows = materialize(con, dialect)
    except Exception as exc:
        error = logs.one_line(exc)
    run = Run(TASK, scheduled, started, _utcnow(), "FAILED" if error else "SUCCEEDED", error, rows)
    try:
        if con is not None:
            record(con, dialect, run)
    except Exception as exc:
        log.error("warehouse.history_failed", error=logs.one_line(exc))
    finally:
        if con is not None:
            with contextlib.suppress(Exception):
                con.close()
    return run


async def run_schedule(
    connect: Callable[[], Any],
    dialect: str,
    interval: float,
    metrics: Any = None,
) -> None:
    """Play the task every ``interval`` seconds until cancelled.

    Runs keep to the schedule (the n-th is due at start + n x interval, however
    long the ones before took); a slot that passes while a run is still busy is
    skipped, as Snowflake skips a task run that would overlap the last one.
    """
    loop = asyncio.get_running_loop()
    mono0, wall0 = loop.time(), _utcnow()
    n = 1
    while True:
        due = mono0 + n * interval
        await asyncio.sleep(max(0.0, due - loop.time()))
        scheduled = wall0 + dt.timedelta(seconds=n * interval)
        work = asyncio.ensure_future(asyncio.to_thread(run_task, connect, dialect, scheduled))
        try:
            run = await asyncio.shield(work)
        except asyncio.CancelledError:
            # Let the refresh in flight finish and close its connection before the caller
            # closes the sink under it (bounded: a shutdown has a time limit).
            with contextlib.suppress(BaseException):
                _count(await asyncio.wait_for(work, CANCEL_WAIT), metrics)
            raise
        _count(run, metrics)
        behind = int((loop.time() - mono0) // interval)
        if behind > n:
            log.warning("warehouse.refresh_skipped", runs=behind - n, interval_s=interval)
        n = max(n + 1, behind + 1)


def _count(run: Run, metrics: Any) -> None:
    if metrics is not None:
        metrics.refresh_runs.labels(state=run.state).inc()
    fields = {
        "task": run.name,
        "state": run.state,
        "scheduled": run.scheduled.isoformat(),
        "seconds": round((run.completed - run.started).total_seconds(), 3),
        "rows": run.rows,
    }
    if run.error:
        log.error("warehouse.refresh", error=run.error, **fields)
    else:
        log.info("warehouse.refresh", **fields)


# -- the runner's entry points ----------------------------------------------------


def _holds_data(sink: Any) -> bool:
    return getattr(sink, "name", "") != "null"


def prepare(sink: Any) -> None:
    """Create the warehouse layers on the target (idempotent): ``init``, and ``run`` at start."""
    if not _holds_data(sink):
        return
    con = sink.connect_sql()
    try:
        apply_ddl(con, sink.dialect, sink.local_warehouse, dict(sink.names))
    except (SinkError, ValueError):
        raise
    except Exception as exc:
        raise SinkError(f"creating the warehouse layers failed: {logs.one_line(exc)}") from None
    finally:
        con.close()


def refresh_now(sink: Any, metrics: Any = None) -> Run | None:
    """One refresh right now. Locally it is a run of the task (recorded); on Snowflake, None."""
    if not _holds_data(sink):
        return None
    if sink.local_warehouse:
        run = run_task(sink.connect_sql, sink.dialect, _utcnow())
        _count(run, metrics)
        return run
    con = sink.connect_sql()
    try:
        refresh(con, sink.dialect, local=False)
    finally:
        con.close()
    return None


async def schedule(sink: Any, interval: float, metrics: Any) -> None:
    """Refresh the layers every ``interval`` seconds where the target has no task of its own."""
    if not sink.local_warehouse or not _holds_data(sink):
        return  # Snowflake: the task refresh_orders_agg does it
    await run_schedule(sink.connect_sql, sink.dialect, interval, metrics)
