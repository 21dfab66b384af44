"""The layers on Snowflake: dynamic tables, the view over them, and the refresh task.

What a start sends, and why (the Snowflake documentation pages are named in ``sql/``):

- the layer files as written (``CREATE ... IF NOT EXISTS``): dynamic tables with
  ``REFRESH_MODE = INCREMENTAL``, and the view ``orders_derived`` that adds what
  depends on when it is read;
- a target made by an earlier version (``orders_derived`` a dynamic table, or a layer
  whose refresh mode is FULL: ``SHOW DYNAMIC TABLES``) keeps its layers, and one
  warning line says what to run: ``ecomm-cdc init --upgrade`` drops those dynamic
  tables (derived data; raw_orders is not touched) and creates the new ones;
- ``orders_aggregated``'s target lag follows ``CDC_LAYERS_REFRESH`` (an ``ALTER
  DYNAMIC TABLE ... SET TARGET_LAG`` where it differs);
- the task: created only where ``SHOW TASKS`` finds none, and resumed only then (a
  start never resumes a task that exists: an operator may have suspended it, and
  resuming resets its schedule). A role without EXECUTE TASK gets one warning line
  and the stream goes on. With ``CDC_LAYERS_REFRESH=target-lag`` no task is made.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import logs
from ..config import Names
from ..config.snowflake import TARGET_LAGS
from ..sinks.base import SqlSession
from . import sqlfiles

log = logs.get("warehouse")

TASK = "REFRESH_ORDERS_AGG"
AGGREGATED = "ORDERS_AGGREGATED"
#: The upgrade: what to run, in the warning and in the docs.
UPGRADE = "ecomm-cdc init --upgrade"


@dataclass(frozen=True, slots=True)
class Found:
    """One dynamic table as ``SHOW DYNAMIC TABLES`` lists it."""

    name: str
    refresh_mode: str
    target_lag: str


def _rows(session: SqlSession, sql: str) -> list[dict[str, Any]]:
    cur = session.execute(sql)
    names = [d[0].lower() for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def dynamic_tables(session: SqlSession) -> dict[str, Found]:
    """The dynamic tables of the current schema whose names are ours, by upper-case name."""
    ours = {layer.name.upper() for layer in sqlfiles.layers()}
    ours |= {view.name.upper() for view in sqlfiles.views()}
    found = {}
    for row in _rows(session, "SHOW DYNAMIC TABLES LIKE 'ORDERS%'"):
        name = str(row["name"]).upper()
        if name in ours:
            found[name] = Found(name, str(row["refresh_mode"]).upper(), str(row["target_lag"]))
    return found


def outdated(found: dict[str, Found]) -> list[str]:
    """Why the layers are not the ones ``sql/`` makes (nothing: they are)."""
    why = []
    for view in sqlfiles.views():
        if view.name.upper() in found:
            why.append(
                f"{view.name} is a dynamic table (refresh mode {found[view.name.upper()].refresh_mode})"
            )
    for layer in sqlfiles.layers():
        table = found.get(layer.name.upper())
        if table is not None and table.refresh_mode != "INCREMENTAL":
            why.append(f"{layer.name} refreshes {table.refresh_mode}")
    return why


def _same_lag(found: str, wanted: str) -> bool:
    return " ".join(found.strip("'").lower().split()) == " ".join(wanted.strip("'").lower().split())


def create(
    session: SqlSession, names: Names, upgrade: bool, refused: Callable[[BaseException], bool]
) -> list[str]:
    """Create what is missing (and, with ``upgrade``, replace an earlier version's layers).
    ``refused`` says which failure of the task's RESUME is a missing privilege rather than a
    passing fault. Returns the statements sent."""
    sent: list[str] = []

    def send(sql: str) -> None:
        session.execute(sql)
        sent.append(sql)

    found = dynamic_tables(session)
    why = outdated(found)
    if why and upgrade:
        for name in [o.name for o in reversed(sqlfiles.layers() + sqlfiles.views())]:
            if (
                name.upper() in found
            ):  # dynamic tables of our names only; the rows stay in raw_orders
                send(f"DROP DYNAMIC TABLE IF EXISTS {name}")
        log.info("warehouse.layers_upgraded", dropped=sorted(found), because="; ".join(why))
        found = {}
    elif why:
        log.warning(
            "warehouse.layers_outdated",
            because="; ".join(why),
            cost="every refresh re-reads all of raw_orders",
            then=f"kept as they are: run `{UPGRADE}` to recreate them incrementally "
            "(raw_orders is not touched; the layers are unavailable while they are rebuilt)",
        )
    if not why or upgrade:
        for sql in sqlfiles.layer_ddl(names):
            send(sql)
        table = found.get(AGGREGATED)
        if table is not None and not _same_lag(table.target_lag, names.target_lag):
            send(f"ALTER DYNAMIC TABLE {AGGREGATED.lower()} SET TARGET_LAG = {names.target_lag}")
    _task(session, names, send, refused)
    return sent


def _task(
    session: SqlSession,
    names: Names,
    send: Callable[[str], None],
    refused: Callable[[BaseException], bool],
) -> None:
    """The refresh task: created and resumed once, never resumed by a later start."""
    tasks = _rows(session, f"SHOW TASKS LIKE '{TASK}'")
    if names.target_lag != TARGET_LAGS["task"]:
        if tasks and str(tasks[0]["state"]).lower() == "started":
            log.warning(
                "warehouse.task_beside_target_lag",
                task=TASK.lower(),
                then="it still refreshes every 2 minutes beside orders_aggregated's own target "
                f"lag: `ALTER TASK {TASK.lower()} SUSPEND` (or DROP TASK) to stop paying twice",
            )
        return
    if tasks:
        state = str(tasks[0]["state"]).lower()
        log.info("warehouse.task_kept", task=TASK.lower(), state=state)
        if state != "started":
            log.warning(
                "warehouse.task_suspended",
                task=TASK.lower(),
                then="left suspended (a start never resumes a task that exists): the layers "
                f"refresh only by `ecomm-cdc refresh` until `ALTER TASK {TASK.lower()} RESUME`",
            )
        return
    create_task, resume = sqlfiles.task_ddl(names)
    send(create_task)
    try:
        send(resume)
    except Exception as exc:
        if not refused(exc):
            raise
        log.warning(
            "warehouse.task_not_resumed",
            task=TASK.lower(),
            error=logs.one_line(exc),
            missing="EXECUTE TASK (GRANT EXECUTE TASK ON ACCOUNT TO ROLE <the task owner's role>)",
            then="the stream goes on; the layers refresh only by `ecomm-cdc refresh` until a "
            f"role with the privilege runs `ALTER TASK {TASK.lower()} RESUME`",
        )
