"""The emulated account's dynamic tables and tasks (fakesnow turns a dynamic table into a
plain table and has no tasks). See :mod:`.account` for what is played and what is not."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlglot
from sqlglot import exp

from .replies import Columns, Refused, calls_now, like, missing, now, rows_sql, status

Where = tuple[str, str]  # the session's database and schema

_PROPERTY = re.compile(r"\b(\w+)\s*=\s*('[^']*'|\w+)")
_SCHEDULE = re.compile(r"^(?P<n>\d+)\s*(?P<unit>SECOND|MINUTE|HOUR)S?$", re.I)
_UNIT = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600}
_REFRESH = re.compile(
    r"^ALTER\s+DYNAMIC\s+TABLE\s+(?:\w+\.){0,2}(?P<name>\w+)\s+REFRESH\s*;?$", re.I
)
#: TASK_HISTORY's and DYNAMIC_TABLE_REFRESH_HISTORY's RESULT_LIMIT at most.
KEPT = 10_000

TASK_COLUMNS: Columns = [
    ("created_on", "TIMESTAMP_NTZ"), ("name", "VARCHAR"), ("database_name", "VARCHAR"),
    ("schema_name", "VARCHAR"), ("warehouse", "VARCHAR"), ("schedule", "VARCHAR"),
    ("state", "VARCHAR"), ("definition", "VARCHAR"),
]  # fmt: skip
DYNAMIC_COLUMNS: Columns = [
    ("created_on", "TIMESTAMP_NTZ"), ("name", "VARCHAR"), ("database_name", "VARCHAR"),
    ("schema_name", "VARCHAR"), ("target_lag", "VARCHAR"), ("refresh_mode", "VARCHAR"),
    ("refresh_mode_reason", "VARCHAR"), ("warehouse", "VARCHAR"), ("text", "VARCHAR"),
    ("scheduling_state", "VARCHAR"),
]  # fmt: skip
RUN_COLUMNS: Columns = [
    ("name", "VARCHAR"), ("database_name", "VARCHAR"), ("schema_name", "VARCHAR"),
    ("query_text", "VARCHAR"), ("state", "VARCHAR"), ("error_code", "VARCHAR"),
    ("error_message", "VARCHAR"), ("scheduled_time", "TIMESTAMP_NTZ"),
    ("query_start_time", "TIMESTAMP_NTZ"), ("completed_time", "TIMESTAMP_NTZ"),
    ("query_id", "VARCHAR"),
]  # fmt: skip
REFRESH_COLUMNS: Columns = [
    ("name", "VARCHAR"), ("database_name", "VARCHAR"), ("schema_name", "VARCHAR"),
    ("qualified_name", "VARCHAR"), ("state", "VARCHAR"), ("state_message", "VARCHAR"),
    ("refresh_action", "VARCHAR"), ("refresh_trigger", "VARCHAR"),
    ("refresh_start_time", "TIMESTAMP_NTZ"), ("refresh_end_time", "TIMESTAMP_NTZ"),
    ("data_timestamp", "TIMESTAMP_NTZ"), ("query_id", "VARCHAR"),
]  # fmt: skip


@dataclass
class DynamicTable:
    database: str
    schema: str
    name: str
    select: str  # Snowflake's dialect
    refresh_mode: str  # INCREMENTAL or FULL (AUTO is resolved at creation)
    reason: str
    target_lag: str
    warehouse: str
    text: str
    created_on: dt.datetime
    suspended: bool = False


@dataclass
class Task:
    database: str
    schema: str
    name: str
    warehouse: str
    schedule: str
    body: str
    created_on: dt.datetime
    state: str = "suspended"
    runner: asyncio.Task[None] | None = None
    next_run: dt.datetime | None = None


def _properties(text: str) -> dict[str, str]:
    return {k.upper(): v.strip("'") for k, v in _PROPERTY.findall(text)}


class Objects:
    """Dynamic tables and tasks, by (database, schema, NAME)."""

    def __init__(self, *, execute_task: bool = True, task_speed: float = 1.0) -> None:
        self.execute_task = execute_task
        self.task_speed = task_speed
        self.dynamic: dict[tuple[str, str, str], DynamicTable] = {}
        self.tasks: dict[tuple[str, str, str], Task] = {}
        self.task_history: list[dict[str, Any]] = []
        self.refresh_history: list[dict[str, Any]] = []

    def show_tasks(self, where: Where, pattern: str | None) -> str:
        match = like(pattern)
        rows = [
            (t.created_on, t.name, t.database, t.schema, t.warehouse, t.schedule, t.state, t.body)
            for k, t in sorted(self.tasks.items())
            if k[:2] == where and match(t.name)
        ]
        return rows_sql(TASK_COLUMNS, rows)

    def show_dynamic_tables(self, where: Where, pattern: str | None) -> str:
        match = like(pattern)
        rows = [
            (t.created_on, t.name, t.database, t.schema, t.target_lag, t.refresh_mode, t.reason,
             t.warehouse, t.text, "SUSPENDED" if t.suspended else "ACTIVE")
            for k, t in sorted(self.dynamic.items())
            if k[:2] == where and match(t.name)
        ]  # fmt: skip
        return rows_sql(DYNAMIC_COLUMNS, rows)

    # -- tasks ------------------------------------------------------------------------------

    def task(self, where: Where, name: str) -> Task:
        found = self.tasks.get((*where, name.upper()))
        if found is None:
            raise missing("Task", name)
        return found

    def create_task(self, where: Where, m: re.Match[str]) -> str:
        key = (*where, m["name"].upper())
        if key in self.tasks and not m["replace"]:
            if m["ine"]:
                return status(f"{key[2]} already exists, statement succeeded.")
            raise Refused(
                2002, "42710", f"SQL compilation error:\nObject '{key[2]}' already exists."
            )
        props = _properties(m["props"])
        old = self.tasks.pop(key, None)
        if old is not None and old.runner is not None:
            old.runner.cancel()
        self.tasks[key] = Task(
            key[0], key[1], key[2], props.get("WAREHOUSE", ""), props.get("SCHEDULE", ""),
            " ".join(m["body"].split()), now(),
        )  # fmt: skip
        return status(f"Task {key[2]} successfully created.")

    def alter_task(self, task: Task, verb: str) -> str:
        if verb == "RESUME":
            if not self.execute_task:
                raise Refused(
                    91089, "23001",
                    "Cannot execute task , EXECUTE TASK privilege must be granted to owner role",
                )  # fmt: skip
            if task.state != "started":
                task.state = "started"
                task.runner = asyncio.get_running_loop().create_task(self._schedule(task))
        elif task.state != "suspended":
            task.state = "suspended"
            if task.runner is not None:
                task.runner.cancel()
            task.runner = task.next_run = None
        return status("Statement executed successfully.")

    def drop_task(self, where: Where, name: str, if_exists: bool) -> str:
        task = self.tasks.pop((*where, name.upper()), None)
        if task is None and not if_exists:
            raise missing("Task", name)
        if task is not None and task.runner is not None:
            task.runner.cancel()
        return status(f"{name.upper()} successfully dropped.")

    def execute_now(self, task: Task) -> str:
        asyncio.get_running_loop().create_task(self._run(task, now()))
        return status(f"Task {task.name} is scheduled to run immediately.")

    def _interval(self, task: Task) -> float:
        m = _SCHEDULE.match(task.schedule.strip())
        seconds = int(m["n"]) * _UNIT[m["unit"].upper()] if m else 60
        return seconds / self.task_speed

    async def _schedule(self, task: Task) -> None:
        """A resumed task: its body every interval from now (resuming resets the schedule);
        a run due while the last one still runs is skipped, as Snowflake skips it."""
        interval = self._interval(task)
        loop = asyncio.get_running_loop()
        base, n = loop.time(), 1
        while True:
            due = base + n * interval
            task.next_run = now() + dt.timedelta(seconds=max(0.0, due - loop.time()))
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._run(task, task.next_run)
            n = max(n + 1, int((loop.time() - base) // interval) + 1)

    async def _run(self, task: Task, scheduled: dt.datetime) -> None:
        started, query_id = now(), str(uuid.uuid4())
        state, code, message = "SUCCEEDED", None, None
        try:
            m = _REFRESH.match(task.body)
            if m is None:
                raise Refused(
                    2003, "0A000",
                    f"the emulator runs only ALTER DYNAMIC TABLE .. REFRESH in a task: {task.body!r}",
                )  # fmt: skip
            await self.refresh((task.database, task.schema), m["name"], "SCHEDULED")
        except Refused as exc:
            state, code, message = "FAILED", f"{exc.errno:06d}", exc.message
        except Exception as exc:
            state, code, message = "FAILED", "000603", f"{type(exc).__name__}: {exc}"
        self.task_history.append(
            {"name": task.name, "database_name": task.database, "schema_name": task.schema,
             "query_text": task.body, "state": state, "error_code": code,
             "error_message": message, "scheduled_time": scheduled, "query_start_time": started,
             "completed_time": now(), "query_id": query_id}
        )  # fmt: skip
        del self.task_history[:-KEPT]

    # -- dynamic tables -----------------------------------------------------------------------

    def create_dynamic(self, where: Where, text: str) -> None:
        """Record a CREATE DYNAMIC TABLE (fakesnow then materialises it)."""
        try:
            create = sqlglot.parse_one(text, read="snowflake")
        except sqlglot.ParseError as exc:
            raise Refused(1003, "42000", f"SQL compilation error: {exc}") from None
        if not isinstance(create, exp.Create) or not isinstance(create.expression, exp.Select):
            raise Refused(1003, "42000", "SQL compilation error: a dynamic table needs AS SELECT")
        key = (*where, create.this.name.upper())
        if key in self.dynamic and create.args.get("exists"):
            return  # IF NOT EXISTS: the table stays as it was, its mode included
        upper = text.upper()
        props = _properties(text[: upper.index(" AS ")] if " AS " in upper else text)
        select = create.expression
        mode, clock = props.get("REFRESH_MODE", "AUTO").upper(), calls_now(select)
        if mode == "INCREMENTAL" and clock:
            raise Refused(
                1003, "42000",
                f"SQL compilation error: Dynamic table '{key[2]}' cannot be refreshed "
                f"incrementally: {clock} is not supported in its SELECT list.",
            )  # fmt: skip
        reason = ""
        if mode == "AUTO":  # resolved once, for good
            mode = "FULL" if clock else "INCREMENTAL"
            reason = f"the SELECT list calls {clock}" if clock else ""
        table = DynamicTable(
            key[0], key[1], key[2], select.sql("snowflake"), mode, reason,
            props.get("TARGET_LAG", "DOWNSTREAM"), props.get("WAREHOUSE", ""), text, now(),
        )  # fmt: skip
        self.dynamic[key] = table
        self._refreshed(table, "FULL", "CREATION", now())

    def drop_dynamic(self, where: Where, name: str, if_exists: bool) -> str:
        table = self.dynamic.pop((*where, name.upper()), None)
        if table is None and not if_exists:
            raise missing("Dynamic table", name)
        return f"DROP TABLE IF EXISTS {name}"

    async def alter_dynamic(
        self, where: Where, name: str, verb: str, lag: str | None = None
    ) -> str:
        table = self.dynamic.get((*where, name.upper()))
        if table is None:
            raise missing("Dynamic table", name)
        if verb == "REFRESH":
            await self.refresh(where, name, "MANUAL")
        elif verb == "SET" and lag is not None:
            table.target_lag = lag.strip("'")
        else:
            table.suspended = verb == "SUSPEND"
        return status("Statement executed successfully.")

    async def refresh(self, where: Where, name: str, trigger: str) -> None:
        """Refresh a dynamic table, and first the dynamic tables it reads."""
        table = self.dynamic.get((*where, name.upper()))
        if table is None:
            raise missing("Dynamic table", name)
        for read in sqlglot.parse_one(table.select, read="snowflake").find_all(exp.Table):
            upstream = self.dynamic.get((*where, read.name.upper()))
            if upstream is not None and upstream is not table:
                await self.refresh(where, upstream.name, trigger)
        started = now()
        before, after = await asyncio.to_thread(_recompute, table)
        self._refreshed(
            table, "NO_DATA" if after == before else table.refresh_mode, trigger, started
        )

    def _refreshed(
        self, table: DynamicTable, action: str, trigger: str, started: dt.datetime
    ) -> None:
        self.refresh_history.append(
            {"name": table.name, "database_name": table.database, "schema_name": table.schema,
             "qualified_name": f"{table.database}.{table.schema}.{table.name}",
             "state": "SUCCEEDED", "state_message": None, "refresh_action": action,
             "refresh_trigger": trigger, "refresh_start_time": started,
             "refresh_end_time": now(), "data_timestamp": started, "query_id": str(uuid.uuid4())}
        )  # fmt: skip
        del self.refresh_history[:-KEPT]

    # -- INFORMATION_SCHEMA's table functions ----------------------------------------------------

    def history(self, text: str) -> str:
        """The query, each ``TABLE(INFORMATION_SCHEMA.X(...))`` replaced by X's rows."""
        query = sqlglot.parse_one(text, read="snowflake")
        for node in list(query.find_all(exp.TableFromRows)):
            fn = node.this.expression if isinstance(node.this, exp.Dot) else node.this
            if not isinstance(fn, exp.Anonymous):
                continue
            name = str(fn.this).upper()
            args = {
                a.this.name.upper(): a.expression.name
                for a in fn.expressions
                if isinstance(a, exp.Kwarg)
            }
            if name == "TASK_HISTORY":
                limit = int(args.get("RESULT_LIMIT") or 100)
                sub = self._runs(args.get("TASK_NAME", "").upper(), limit)
            elif name == "DYNAMIC_TABLE_REFRESH_HISTORY":
                wanted = args.get("NAME", "").upper().split(".")[-1]
                found = [r for r in self.refresh_history if wanted in ("", r["name"])]
                rows = [tuple(r[c] for c, _ in REFRESH_COLUMNS) for r in found]
                sub = rows_sql(REFRESH_COLUMNS, rows)
            else:
                continue
            rows_query = exp.paren(sqlglot.parse_one(sub, read="snowflake"))
            node.replace(rows_query.as_(node.alias or name.lower()))
        return query.sql("snowflake")

    def _runs(self, wanted: str, limit: int) -> str:
        """TASK_HISTORY: the last ``limit`` runs, and each resumed task's next run (SCHEDULED,
        no query id), as Snowflake lists them."""
        runs = [r for r in self.task_history if wanted in ("", r["name"])][-limit:]
        rows = [tuple(r[c] for c, _ in RUN_COLUMNS) for r in runs]
        for task in self.tasks.values():
            if task.next_run is not None and wanted in ("", task.name):
                rows.append(
                    (task.name, task.database, task.schema, task.body, "SCHEDULED", None, None,
                     task.next_run, None, None, None)
                )  # fmt: skip
        return rows_sql(RUN_COLUMNS, rows)


def _recompute(table: DynamicTable) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """Rebuild the table on a connection of the emulator's own; its content's fingerprint
    before and after (equal: the refresh found no data to change)."""
    conn = importlib.import_module("fakesnow.server").shared_fs.connect(
        table.database, table.schema
    )
    digest = f"SELECT COUNT(*), SUM(HASH(TO_JSON(OBJECT_CONSTRUCT(*)))) FROM {table.name}"  # noqa: S608
    try:
        cur = conn.cursor()
        cur.execute(digest)
        before = tuple(cur.fetchone() or ())
        cur.execute(f"CREATE OR REPLACE TABLE {table.name} AS {table.select}")
        cur.execute(digest)
        return before, tuple(cur.fetchone() or ())
    finally:
        conn.close()
