"""The subcommands beside ``run``: init, refresh, report, tasks, verify, query.

Each is ``(config, ns) -> exit code`` and prints to stdout with rich. A target
that cannot be used raises :class:`TargetConfigError` (exit 2); a driver error
becomes one :class:`SinkError` line (exit 1).

``report``, ``tasks``, ``query`` and ``verify`` read through :mod:`service.watch.reads`;
while ``ecomm-cdc run`` holds the DuckDB file they ask that service instead
(:mod:`service.watch.remote`), and print the same.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import math
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from typing import Any, Protocol, TypeVar

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import formats, logs
from .config import Config, ConfigError
from .sinks import make_sink
from .sinks.base import Sink, SinkError, SqlSession, TargetConfigError, Warehouse
from .verify import check as verifying
from .warehouse import layers, scheduler, sqlfiles
from .watch import discovery, reads
from .watch.reads import QUERY_ROWS, read_only
from .watch.remote import Remote, Unavailable

__all__ = ["QUERY_ROWS", "read_only"]  # where they lived before watch/reads.py (tests import them)

T = TypeVar("T")
#: Seconds a command waits for a service that is starting or stopping.
SERVICE_WAIT = 10.0
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


def _cell(value: Any, money: bool = False, plain: bool = False) -> Text:
    """One value for a table; ``plain``: a year, month or id, no thousands separators."""
    sep = "" if plain else ","
    if value is None:
        return Text("NULL", style="dim")
    if isinstance(value, bool):
        return Text(str(value))
    if isinstance(value, int):
        return Text(f"{value:{sep}}")
    if isinstance(value, Decimal | float):
        if money:
            return Text(f"{value:{sep}.2f}")
        if math.isfinite(value) and value == int(value):  # the emulator: SUM(INTEGER) a float
            return Text(f"{int(value):{sep}}")
        return Text(f"{value:{sep}}")
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
    plain = [formats.plain_number(name) for name in columns]
    for r in rows:
        table.add_row(*(_cell(v, columns[i] in money, plain[i]) for i, v in enumerate(r)))
    return table


def _written(ns: argparse.Namespace, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
    """With ``--format csv`` or ``json``: the rows written to stdout, and nothing else."""
    fmt = getattr(ns, "format", None) or "table"
    if fmt == "table":
        return False
    write = formats.write_csv if fmt == "csv" else formats.write_json
    write(sys.stdout, columns, rows)
    sys.stdout.flush()
    return True


# -- the commands -----------------------------------------------------------------------


def init(config: Config, ns: argparse.Namespace) -> int:
    """Create the tables, the layers and the task (or the local task history). Idempotent."""
    out = _console()
    if config.target == "kafka":  # topics, not tables
        from .sinks.kafka import fold

        return fold.init(config, out)
    with _target(config, create=True) as sink, _connection(sink) as session:
        layers.apply_ddl(session, sink.warehouse, sink.names, upgrade=ns.upgrade)
        local = sink.warehouse is Warehouse.LOCAL
    layer = "table, materialised from its sql/ SELECT" if local else "dynamic table, incremental"
    rows = [
        ("raw_orders", "table", "001_raw_orders.sql"),
        (
            "cdc_streams, cdc_checkpoints, cdc_snapshots, cdc_sessions",
            "tables",
            "002_cdc_state.sql",
        ),
        *((ly.name, layer, ly.file) for ly in sqlfiles.layers()),
        *((v.name, "view", v.file) for v in sqlfiles.views()),
        (
            (
                "cdc_task_history",
                "table; the service's scheduler plays the task",
                "030_local_task_history.sql",
            )
            if local
            else (
                (
                    "refresh_orders_agg",
                    "task, every 2 minutes (created and resumed once)",
                    "020_refresh_task.sql",
                )
                if config.settings.layers_refresh == "task"
                else (
                    "orders_aggregated",
                    "TARGET_LAG = '2 minutes', no task",
                    "011_orders_aggregated.sql",
                )
            )
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
    names = ", ".join(sqlfiles.queried())
    out.print(f"refreshed {names}: {run.rows:,} rows in {took:.2f} s")
    return 0


# -- the reads: from the target itself, or from the service that holds it ----------------


class Reader(Protocol):
    """Where ``report``, ``tasks``, ``query`` and ``verify`` read: the target, or its service."""

    name: str

    def report(self) -> reads.Rows: ...

    def tasks(self) -> tuple[bool, reads.Rows]: ...

    def query(self, sql: str) -> reads.Rows: ...

    def verify(self, shard: str) -> verifying.Report: ...


class _Local:
    """The target, opened by this process."""

    def __init__(self, sink: Sink, session: SqlSession, read_memory_mb: int | None) -> None:
        self.name, self._sink, self._session = sink.name, sink, session
        self._read_memory_mb = read_memory_mb

    def report(self) -> reads.Rows:
        return reads.aggregated(self._session)

    def tasks(self) -> tuple[bool, reads.Rows]:
        local = self._sink.warehouse is Warehouse.LOCAL
        return local, reads.tasks(self._session, local)

    def query(self, sql: str) -> reads.Rows:
        local = self._sink.warehouse is Warehouse.LOCAL
        return reads.query(self._session, sql, QUERY_ROWS, local=local)

    def verify(self, shard: str) -> verifying.Report:
        # On its own the target is quiet: refresh (and commit) the layers, then check.
        return verifying.verify(
            self._session, self._sink.warehouse, shard, read_memory_mb=self._read_memory_mb
        )


def _read(config: Config, fn: Callable[[Reader], T]) -> tuple[str, T]:
    """``fn`` on the target; while ``run`` holds the DuckDB file, on the running service.

    A service that is starting or stopping is waited for (up to ``SERVICE_WAIT``
    seconds): once it has closed the file, the file is opened here.
    """
    from .sinks.duckdb import FileInUse

    if config.target == "kafka":  # a topic: folded into a database of this command's own
        from .sinks.kafka.fold import Folded

        with Folded.open(config) as folded:
            return folded.name, fn(folded)
    deadline = time.monotonic() + SERVICE_WAIT
    while True:
        try:
            with _target(config) as sink, _connection(sink) as session:
                given = config.settings.duckdb_memory_mb
                local = _Local(sink, session, None if given else verifying.READ_MEMORY_MB)
                return local.name, fn(local)
        except FileInUse as busy:
            note = discovery.find(config.settings.duckdb_path)
            if note is None:
                raise SinkError(
                    f"{busy}; no running ecomm-cdc service is recorded beside it "
                    f"({discovery.note_path(config.settings.duckdb_path).name})"
                ) from None
            service = Remote(note, config.settings.query_timeout)
            try:
                result = fn(service)
            except Unavailable:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.25)
                continue
            return service.name, result


def report(config: Config, ns: argparse.Namespace) -> int:
    """orders_aggregated, one row per month, one column per metric."""
    name, (running, found) = _read(config, lambda r: (isinstance(r, Remote), r.report()))
    names, rows = found.columns, found.rows
    if _written(ns, names, rows):
        return 0
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
        if running:  # the file is the service's: `refresh` would have to wait for its end
            out.print(
                "orders_aggregated is empty: the running service fills it at its next refresh "
                "(`ecomm-cdc tasks` lists the runs)"
            )
        else:
            out.print("orders_aggregated is empty: run `ecomm-cdc refresh` after `ecomm-cdc run`")
        return 0
    title = f"orders_aggregated ({name}): one row per month"
    out.print(_table(columns, shaped, title=title, money=_MONEY, wrap=12))
    out.print(
        "total_high_value_orders / total_low_value_orders are revenue (the seed's names); "
        "the counts are high_value_order_count / low_value_order_count."
    )
    return 0


def tasks(config: Config, ns: argparse.Namespace) -> int:
    """The refresh task's runs: the local history, or Snowflake's TASK_HISTORY."""
    if config.target == "kafka":
        _console().print(
            f"{scheduler.TASK}: none on the kafka target: the topic holds change events; "
            "`ecomm-cdc report` folds it and computes orders_aggregated each time it runs"
        )
        return 0
    _, (local, found) = _read(config, lambda r: r.tasks())
    columns, rows = found.columns, found.rows
    if _written(ns, columns, rows):
        return 0
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
    name, result = _read(config, lambda r: r.verify(config.settings.shard))
    table = Table(title=f"verify {name}: {result.stream}", title_justify="left")
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


def query(config: Config, ns: argparse.Namespace) -> int:
    """Run one read-only query and print its result (inside a transaction that is rolled back)."""
    _, found = _read(config, lambda r: r.query(ns.sql))
    more = f"first {QUERY_ROWS:,} rows (add a LIMIT)"
    if _written(ns, found.columns, found.rows):
        if found.more:  # stdout holds the data alone
            print(f"ecomm-cdc: {more}", file=sys.stderr)
        return 0
    out = _console()
    out.print(_table(found.columns, found.rows))
    out.print(more if found.more else f"{len(found.rows):,} rows")
    return 0
