"""The warehouse layers (orders_derived, orders_aggregated) on a target: create, refresh.

``sql/`` is the one source (:mod:`service.warehouse.sqlfiles` reads it). On Snowflake its
files run as written: dynamic tables, the view over them, and the task
``refresh_orders_agg`` (:mod:`service.warehouse.dynamic`). Where dynamic tables and
tasks are not real (DuckDB, the emulator), the SELECT of each dynamic table is
translated and materialised (on DuckDB kept by deltas, :mod:`service.warehouse.deltas`),
the views are created as written, translated, and :mod:`service.warehouse.scheduler`
plays the task.
"""

from __future__ import annotations

from sqlglot import exp

from .. import logs
from ..config import Names
from ..retry import Phase
from ..sinks.base import Sink, SinkError, SqlSession, Warehouse, transaction
from . import decompose, deltas, dynamic, sqlfiles


def apply_ddl(
    session: SqlSession, warehouse: Warehouse, names: Names, upgrade: bool = False
) -> list[str]:
    """Create the layers (and the task, or the local task history). Idempotent.

    Returns the statements run. Locally the layers are materialised at once. On
    Snowflake, ``upgrade`` replaces the layers an earlier version made.
    """
    if warehouse is Warehouse.DYNAMIC:
        from ..sinks.snowflake import errors

        return dynamic.create(session, names, upgrade, lambda e: not errors.is_transient(e))
    done = sqlfiles.local_ddl(session.dialect)
    for stmt in done:
        session.execute(stmt)
    materialize(session)
    objects = sqlfiles.layers() + sqlfiles.views()
    return done + [o.local_sql(session.dialect) for o in objects]


def materialize(session: SqlSession) -> int:
    """Bring every layer up to date, in one transaction. Returns rows written.

    On DuckDB by deltas where the change log covers what changed, else by a
    full rebuild (:mod:`service.warehouse.deltas`); on the emulator (whose writer keeps
    no change log) each layer is rebuilt from its translated SELECT. A reader
    sees the old tables until the commit, never an empty one.
    """
    layers = sqlfiles.layers()
    plan = decompose.plan(layers) if session.dialect == "duckdb" else None
    with transaction(session):
        written = deltas.refresh(session, plan) if plan is not None else _rebuild(session, layers)
        _views(session)
        return written


def _views(session: SqlSession) -> None:
    """The views of sql/ (cheap: replaced every time, so a changed definition takes)."""
    for view in sqlfiles.views():
        if _kind(session, view.name) == "BASE TABLE":
            # An earlier version kept the whole layer as a table of this name.
            session.execute(_drop(view.name, "TABLE", session.dialect))
        session.execute(view.local_sql(session.dialect))


def _drop(name: str, kind: str, dialect: str) -> str:
    return exp.Drop(tables=[exp.to_table(name)], kind=kind, exists=True).sql(dialect)


def _kind(session: SqlSession, name: str) -> str | None:
    """'BASE TABLE', 'VIEW' or None: what ``name`` is in the current schema."""
    row = session.execute(
        "SELECT table_type FROM information_schema.tables WHERE UPPER(table_name) = ? "
        "AND UPPER(table_schema) = UPPER(CURRENT_SCHEMA())",
        [name.upper()],
    ).fetchone()
    return None if row is None else str(row[0])


def _rebuild(session: SqlSession, layers: list[sqlfiles.Layer]) -> int:
    rows = 0
    for layer in layers:
        if _kind(session, layer.name) == "VIEW":
            session.execute(_drop(layer.name, "VIEW", session.dialect))
        session.execute(layer.local_sql(session.dialect))
        count = exp.select("COUNT(*)").from_(layer.name).sql(dialect=session.dialect)
        rows += int(session.execute(count).fetchone()[0])
    if session.dialect == "duckdb":
        deltas.forget(session)
    return rows


def refresh(session: SqlSession, warehouse: Warehouse) -> int | None:
    """Refresh the layers now: locally rebuild them (rows written); on Snowflake, refresh
    the dynamic tables (None)."""
    if warehouse is Warehouse.LOCAL:
        return materialize(session)
    session.execute(sqlfiles.refresh_statement())
    return None


def prepare(sink: Sink) -> None:
    """Create the warehouse layers on the target (idempotent): ``init``, and ``run`` at start."""
    if sink.warehouse is Warehouse.NONE:
        return
    try:
        sink.run(
            lambda session: apply_ddl(session, sink.warehouse, sink.names),
            "creating the warehouse layers",
            Phase.LAYERS,
        )
    except (SinkError, ValueError):
        raise
    except Exception as exc:
        raise SinkError(f"creating the warehouse layers failed: {logs.one_line(exc)}") from None
