"""The subcommands beside ``run``: init, refresh, report, tasks, verify, query.

Each is ``(config, ns) -> exit code`` and prints to stdout with rich. A target
that cannot be used raises :class:`TargetConfigError` (exit 2); a driver error
becomes one :class:`SinkError` line (exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import sqlglot
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sqlglot import exp

from . import logs, scheduler, sqlfiles, warehouse
from . import verify as verifying
from .config import Config, ConfigError
from .sinks import make_sink
from .sinks.base import Sink, SinkError, SqlSession, TargetConfigError, Warehouse, transaction

#: Rows ``query`` prints at most (it says so when there are more).
QUERY_ROWS = 1000
_WRITES = (
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
_MONEY = (*verifying.MONEY, *verifying.AVERAGES)


def _console() -> Console:
    # Off a terminal rich would fold a wide table into 80 columns.
    return Console(file=sys.stdout, width=None if sys.stdout.isatty() else 240, highlight=False)


def _driver_errors() -> tuple[type[BaseException], ...]:
    """The drivers' error bases, from the drivers this process has loaded."""
    found = []
    for name in ("duckdb", "snowflake.connector.errors"):
        module = sys.modules.get(name)
        if module is not None:
            found.append(module.Error)
    return tuple(found)


@contextlib.contextmanager
def _target(config: Config, create: bool = False) -> Iterator[Sink]:
    """The configured target, open; closed on the way out. Driver errors become SinkError."""
    path = config.settings.duckdb_path
    if config.target == "duckdb" and not create and not path.exists():
        raise TargetConfigError(
            "CDC_DUCKDB_PATH", f"no database at {path}: run `ecomm-cdc init` or `run` first"
        )
    sink = make_sink(config)
    try:
        sink.open()
        yield sink
    except (SinkError, ConfigError, TargetConfigError):
        raise
    except _driver_errors() as exc:
        raise SinkError(f"{sink.name}: {logs.one_line(exc)}") from None
    finally:
        sink.close()


@contextlib.contextmanager
def _connection(sink: Sink) -> Iterator[SqlSession]:
    session = sink.connect_sql()
    try:
        if sink.warehouse is Warehouse.LOCAL:
            for stmt in sqlfiles.local_ddl(session.dialect):  # the task history, if missing
                session.execute(stmt)
        yield session
    finally:
        with contextlib.suppress(Exception):
            session.close()


# -- formatting ------------------------------------------------------------------------


def _cell(value: Any, money: bool = False) -> Text:
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, bool):
        return Text(str(value))
    if isinstance(value, int):
        return Text(f"{value:,}")
    if isinstance(value, Decimal | float):
        if money:
            return Text(f"{value:,.2f}")
        if value == int(value):  # the emulator returns SUM(INTEGER) as a float
            return Text(f"{int(value):,}")
        return Text(f"{value:,}")
    if isinstance(value, dt.datetime):
        return Text(value.isoformat(sep=" ", timespec="milliseconds"))
    return Text(str(value))


def _numeric(values: Sequence[Any]) -> bool:
    return any(isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in values)


def _header(name: str, width: int) -> str:
    """A long column name broken after its underscores, so a wide table fits a terminal."""
    if width <= 0 or len(name) <= width:
        return name
    return "\n".join(w.replace(" ", "") for w in textwrap.wrap(name.replace("_", "_ "), width))


def _table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    title: str | None = None,
    money: Sequence[str] = (),
    wrap: int = 0,
) -> Table:
    table = Table(title=title, title_justify="left", show_lines=False)
    for i, name in enumerate(columns):
        right = _numeric([r[i] for r in rows])
        table.add_column(_header(name, wrap), justify="right" if right else "left", overflow="fold")
    for r in rows:
        table.add_row(*(_cell(v, columns[i] in money) for i, v in enumerate(r)))
    return table


# -- the commands -----------------------------------------------------------------------


def init(config: Config, ns: argparse.Namespace) -> int:
    """Create the tables, the layers and the task (or the local task history). Idempotent."""
    out = _console()
    with _target(config, create=True) as sink, _connection(sink) as session:
        warehouse.apply_ddl(session, sink.warehouse, sink.names)
        local = sink.warehouse is Warehouse.LOCAL
    layer = "table, materialised from its sql/ SELECT" if local else "dynamic table"
    rows = [
        ("raw_orders", "table", "001_raw_orders.sql"),
        ("cdc_streams, cdc_checkpoints, cdc_snapshots", "tables", "002_cdc_state.sql"),
        *((ly.name, layer, ly.file) for ly in sqlfiles.layers()),
        (
            (
                "cdc_task_history",
                "table; the service's scheduler plays the task",
                "030_local_task_history.sql",
            )
            if local
            else ("refresh_orders_agg", "task, every 2 minutes, resumed", "020_refresh_task.sql")
        ),
    ]
    out.print(_table(["object", "kind", "from"], rows, title=f"ecomm-cdc init: {sink.name} ready"))
    return 0


def refresh(config: Config, ns: argparse.Namespace) -> int:
    """Refresh orders_derived and orders_aggregated now."""
    out = _console()
    with _target(config) as sink:
        t = time.perf_counter()
        run = scheduler.refresh_now(sink)
        took = time.perf_counter() - t
    if run is None:
        out.print(f"{sqlfiles.refresh_statement()}: done in {took:.2f} s")
        return 0
    if run.state != "SUCCEEDED":
        out.print(f"refresh FAILED after {took:.2f} s: {run.error}")
        return 1
    names = ", ".join(ly.name for ly in sqlfiles.layers())
    out.print(f"refreshed {names}: {run.rows:,} rows in {took:.2f} s")
    return 0


def report(config: Config, ns: argparse.Namespace) -> int:
    """orders_aggregated, one row per month, one column per metric."""
    with _target(config) as sink, _connection(sink) as session:
        cur = session.execute("SELECT * FROM orders_aggregated ORDER BY order_year, order_month")
        names = [d[0].lower() for d in cur.description]
        rows = [tuple(r) for r in cur.fetchall()]
    columns = ["month", *(n for n in names if n not in ("order_year", "order_month"))]
    y, m = names.index("order_year"), names.index("order_month")
    shaped = [
        (
            f"{r[y]}-{int(r[m]):02d}" if r[y] is not None and r[m] is not None else "NULL",
            *(v for i, v in enumerate(r) if i not in (y, m)),
        )
        for r in rows
    ]
    out = _console()
    if not shaped:
        out.print("orders_aggregated is empty: run `ecomm-cdc refresh` after `ecomm-cdc run`")
        return 0
    title = f"orders_aggregated ({sink.name}): one row per month"
    out.print(_table(columns, shaped, title=title, money=_MONEY, wrap=12))
    out.print(
        "total_high_value_orders / total_low_value_orders are revenue (the seed's names); "
        "the counts are high_value_order_count / low_value_order_count."
    )
    return 0


def tasks(config: Config, ns: argparse.Namespace) -> int:
    """The refresh task's runs: the local history, or Snowflake's TASK_HISTORY."""
    with _target(config) as sink, _connection(sink) as session:
        local = sink.warehouse is Warehouse.LOCAL
        columns, rows = scheduler.history(session, local)
    out = _console()
    if not rows:
        where = "while `ecomm-cdc run` runs, every CDC_REFRESH_INTERVAL seconds" if local else ""
        out.print(f"{scheduler.TASK}: no runs yet {where}".rstrip())
        return 0
    state = columns.index("state")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r[state]] = counts.get(r[state], 0) + 1
    source = "cdc_task_history" if local else "INFORMATION_SCHEMA.TASK_HISTORY"
    out.print(_table(columns, rows, title=f"{scheduler.TASK} ({source})"))
    out.print(f"{len(rows)} runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def verify(config: Config, ns: argparse.Namespace) -> int:
    """Check the target against the replay of its stream: exit 0 when every check holds."""
    out = _console()
    with _target(config) as sink, _connection(sink) as session:
        result = verifying.verify(session, sink.warehouse, sink.shard)
    table = Table(title=f"verify {sink.name}: {result.stream}", title_justify="left")
    for col in ("check", "result", "detail"):
        table.add_column(col, overflow="fold")
    for c in result.checks:
        table.add_row(c.name, Text("ok", "green") if c.ok else Text("FAILED", "bold red"), c.detail)
    out.print(table)
    for c in result.checks:
        if not c.ok:
            out.print(f"{c.name}: first differences")
            for d in c.differences:
                out.print(f"  {d}", markup=False)
    return 0 if result.ok else 1


class _RolledBack(Exception):
    """Leaves a transaction by its rollback."""


def read_only(sql: str, dialect: str) -> str:
    """``sql`` if it is one read-only query in ``dialect``; else a ConfigError (exit 2)."""
    try:
        parsed = [e for e in sqlglot.parse(sql, read=dialect) if e is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise ConfigError("query", f"the SQL does not parse: {logs.one_line(exc)}") from None
    if len(parsed) != 1:
        raise ConfigError("query", f"give exactly one statement (got {len(parsed)})")
    stmt = parsed[0]
    write = stmt.find(*_WRITES)
    if not isinstance(stmt, exp.Query) or write is not None:
        kind = type(write or stmt).__name__.upper()
        raise ConfigError("query", f"only a read-only query (SELECT, WITH, UNION) runs; got {kind}")
    return sql


def query(config: Config, ns: argparse.Namespace) -> int:
    """Run one read-only query and print its result (inside a transaction that is rolled back)."""
    with _target(config) as sink, _connection(sink) as session:
        sql = read_only(ns.sql, session.dialect)
        with contextlib.suppress(_RolledBack), transaction(session):
            cur = session.execute(sql)
            columns = [d[0] for d in cur.description]
            rows = [tuple(r) for r in cur.fetchmany(QUERY_ROWS + 1)]
            raise _RolledBack  # a query never commits anything
    out = _console()
    out.print(_table(columns, rows[:QUERY_ROWS]))
    more = len(rows) > QUERY_ROWS
    out.print(f"first {QUERY_ROWS:,} rows (add a LIMIT)" if more else f"{len(rows):,} rows")
    return 0
