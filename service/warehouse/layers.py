"""The warehouse layers (orders_derived, orders_aggregated) on a target: create, refresh.

``sql/`` is the one source (:mod:`service.warehouse.sqlfiles` reads it). On Snowflake its
files run as written: dynamic tables, and the task ``refresh_orders_agg``,
resumed. Where dynamic tables and tasks are not real (DuckDB, the emulator),
the SELECT of each dynamic table is translated and materialised (on DuckDB kept
by deltas, :mod:`service.warehouse.deltas`), and :mod:`service.warehouse.scheduler` plays the task.
"""

from __future__ import annotations

from sqlglot import exp

from .. import logs
from ..config import Names
from ..retry import Phase
from ..sinks.base import Sink, SinkError, SqlSession, Warehouse, transaction
from . import decompose, deltas, sqlfiles


def apply_ddl(session: SqlSession, warehouse: Warehouse, names: Names) -> list[str]:
    """Create the layers (and the task, or the local task history). Idempotent.

    Returns the statements run. Locally the layers are materialised at once.
    """
    if warehouse is Warehouse.DYNAMIC:
        done = []
        for stmt in sqlfiles.snowflake_ddl(names):
            session.execute(stmt)
            done.append(stmt)
        return done
    done = sqlfiles.local_ddl(session.dialect)
    for stmt in done:
        session.execute(stmt)
    materialize(session)
    return done + [layer.local_sql(session.dialect) for layer in sqlfiles.layers()]


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
        if plan is not None:
            return deltas.refresh(session, plan)
        return _rebuild(session, layers)


def _rebuild(session: SqlSession, layers: list[sqlfiles.Layer]) -> int:
    rows = 0
    for layer in layers:
        if session.dialect == "duckdb":
            deltas.drop(session, layer.name)  # a view, where deltas kept the layer before
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
