"""What a start sends Snowflake for the layers, against the emulator's account layer (which
refuses an INCREMENTAL dynamic table that reads the clock, resolves AUTO once at creation,
keeps tasks, and can play a role without EXECUTE TASK).

The DDL is captured as the server received it from a real run (the Gate in front of the
emulator), and checked by parsing it: a test of what is sent cannot be fooled by what the
emulator does with it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlglot
from sqlglot import exp

from service.sinks.emulator.replies import calls_now

from .conftest import START, cli
from .emulator import Gate, Server

EVENTS = "600"
SEED_DERIVED = [
    "ORDER_ID", "CUSTOMER_ID", "ORDER_DATE", "STATUS", "AMOUNT", "PRODUCT_ID", "QUANTITY",
    "ORDER_YEAR", "ORDER_MONTH", "ORDER_VALUE_CATEGORY", "ORDER_COMPLETION_STATUS",
    "DAYS_SINCE_ORDER",
]  # fmt: skip
#: What the release before this one created (its sql/010 and 011, rendered): dynamic tables
#: without REFRESH_MODE, orders_derived reading the clock in its SELECT list.
EARLIER = [
    "CREATE DYNAMIC TABLE IF NOT EXISTS orders_derived TARGET_LAG = DOWNSTREAM "
    "WAREHOUSE = COMPUTE_WH AS SELECT order_id, customer_id, order_date, status, amount, "
    "product_id, quantity, EXTRACT(YEAR FROM order_date) AS order_year, EXTRACT(MONTH FROM "
    "order_date) AS order_month, CASE WHEN amount > 100 THEN 'High Value' ELSE 'Low Value' END "
    "AS order_value_category, CASE WHEN status = 'DELIVERED' THEN 'Completed' ELSE 'Pending' "
    "END AS order_completion_status, DATEDIFF('day', order_date, SYSDATE()) AS "
    "days_since_order FROM raw_orders",
    "CREATE DYNAMIC TABLE IF NOT EXISTS orders_aggregated TARGET_LAG = DOWNSTREAM "
    "WAREHOUSE = COMPUTE_WH AS SELECT order_year, order_month, COUNT(DISTINCT order_id) AS "
    "total_orders, SUM(amount) AS total_revenue, AVG(amount) AS average_order_value, "
    "COUNT(DISTINCT customer_id) AS unique_customers, SUM(quantity) AS total_items_sold, "
    "SUM(CASE WHEN status = 'DELIVERED' THEN amount ELSE 0 END) AS total_delivered_revenue, "
    "SUM(CASE WHEN order_value_category = 'High Value' THEN amount ELSE 0 END) AS "
    "total_high_value_orders, SUM(CASE WHEN order_value_category = 'Low Value' THEN amount "
    "ELSE 0 END) AS total_low_value_orders, COUNT(CASE WHEN order_value_category = "
    "'High Value' THEN 1 END) AS high_value_order_count, COUNT(CASE WHEN "
    "order_value_category = 'Low Value' THEN 1 END) AS low_value_order_count "
    "FROM orders_derived GROUP BY order_year, order_month",
]


def _run(server: Server, *extra: str, **env: str) -> list[dict[str, Any]]:
    """``run --target snowflake`` against the server, to the end: its log lines."""
    done = cli(
        "run", "--target", "snowflake", "--events", EVENTS, "--seed", "7", "--start", START,
        "--batch-size", "200", *extra, env={**server.env(), **env},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    return [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]


def _events(lines: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [x for x in lines if x["event"] == event]


def _sent(server: Server, since: int = 0) -> list[str]:
    """The statements the server received, without their leading comment lines."""
    return [
        "\n".join(ln for ln in r.sql.strip().splitlines() if not ln.lstrip().startswith("--"))
        for r in server.gate.statements[since:]
    ]


def _dynamic(server: Server) -> dict[str, tuple[str, str]]:
    rows = server.query("SHOW DYNAMIC TABLES")
    return {str(r[1]): (str(r[5]), str(r[4])) for r in rows}  # name: (refresh_mode, lag)


def _task_state(server: Server) -> list[str]:
    return [str(r[6]) for r in server.query("SHOW TASKS LIKE 'REFRESH_ORDERS_AGG'")]


def test_the_layers_are_incremental_and_orders_derived_keeps_the_seeds_columns() -> None:
    """The DDL a run sends: every dynamic table with REFRESH_MODE = INCREMENTAL and no
    current-time function in its definition; orders_derived is a view with the seed's columns
    (days_since_order included); the task is created and resumed once."""
    with Server() as server:
        lines = _run(server)
        creates = []
        for sql in _sent(server):
            if sql.upper().startswith(("CREATE DYNAMIC TABLE", "CREATE OR REPLACE DYNAMIC TABLE")):
                parsed = sqlglot.parse_one(sql, read="snowflake")
                assert isinstance(parsed, exp.Create)
                creates.append(parsed)
                assert "REFRESH_MODE = INCREMENTAL" in " ".join(sql.upper().split()), sql
                assert calls_now(parsed.expression) is None, sql
                assert not any(
                    isinstance(n, exp.CurrentTimestamp | exp.CurrentDate)
                    or (isinstance(n, exp.Anonymous) and str(n.this).upper() == "SYSDATE")
                    for n in parsed.expression.walk()
                ), sql
        assert sorted(c.this.name for c in creates) == ["orders_aggregated", "orders_derived_rows"]
        assert _dynamic(server) == {
            "ORDERS_AGGREGATED": ("INCREMENTAL", "DOWNSTREAM"),
            "ORDERS_DERIVED_ROWS": ("INCREMENTAL", "DOWNSTREAM"),
        }
        since = len(server.gate.statements)
        done = cli("refresh", "--target", "snowflake", env=server.env())
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ALTER DYNAMIC TABLE orders_aggregated REFRESH" in _sent(server, since)
        conn_rows = server.query("SELECT * FROM orders_derived")
        assert conn_rows, "the view shows the refreshed rows"
        columns = server.query(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = 'ORDERS_DERIVED' ORDER BY ordinal_position"
        )
        assert [c[0].upper() for c in columns] == SEED_DERIVED
        ages = server.query("SELECT MIN(days_since_order) FROM orders_derived")
        assert int(ages[0][0]) > 300, "order dates of 2026-01 are older than 300 days"
        resumes = [s for s in _sent(server) if s.upper().startswith("ALTER TASK")]
        assert resumes == ["ALTER TASK refresh_orders_agg RESUME"]
        assert _task_state(server) == ["started"]
        assert not _events(lines, "warehouse.task_not_resumed")


def test_a_second_start_leaves_a_suspended_task_suspended() -> None:
    """An operator suspended the task: the next start does not resume it (one warning line
    says so and how to resume it), and sends no ALTER TASK at all."""
    with Server() as server:
        _run(server)
        server.query("ALTER TASK refresh_orders_agg SUSPEND")
        since = len(server.gate.statements)
        lines = _run(server, "--events", "900")
        assert not [
            s for s in _sent(server, since) if "TASK" in s.upper() and "SHOW" not in s.upper()
        ]
        assert _task_state(server) == ["suspended"]
        (warning,) = _events(lines, "warehouse.task_suspended")
        assert "ALTER TASK refresh_orders_agg RESUME" in warning["then"]


def test_a_role_without_execute_task_streams_with_one_warning() -> None:
    """The emulator refuses ALTER TASK ... RESUME as Snowflake does for a role without EXECUTE
    TASK (091089): the service streams to the end (exit 0), with one warning line naming the
    missing privilege; the task exists, suspended."""
    with Server(Gate()) as server:
        server.gate.account.objects.execute_task = False
        lines = _run(server)
        (warning,) = _events(lines, "warehouse.task_not_resumed")
        assert "EXECUTE TASK" in warning["missing"] and "091089" in warning["error"]
        assert len([x for x in lines if x["level"] in ("warning", "error")]) == 1, lines
        assert _events(lines, "pipeline.summary")[0]["applied_total"] == int(EVENTS)
        assert _task_state(server) == ["suspended"]


def test_an_earlier_versions_layers_are_reported_then_upgraded() -> None:
    """FULL dynamic tables from an earlier version: a start keeps them and says in one
    warning line to run `ecomm-cdc init --upgrade`; that recreates them incrementally, with
    orders_derived a view, and raw_orders untouched."""
    with Server() as server:
        _run(server)  # raw_orders and the state tables, then replace the layers by the old ones
        for name in ("orders_aggregated", "orders_derived_rows"):
            server.query(f"DROP DYNAMIC TABLE {name}")
        server.query("DROP VIEW orders_derived")
        for sql in EARLIER:
            server.query(sql)
        assert _dynamic(server)["ORDERS_DERIVED"][0] == "FULL"
        lines = _run(server, "--events", "900")
        (warning,) = _events(lines, "warehouse.layers_outdated")
        assert "ecomm-cdc init --upgrade" in warning["then"]
        assert "orders_derived is a dynamic table" in warning["because"]
        assert _dynamic(server)["ORDERS_DERIVED"][0] == "FULL", "kept until the upgrade"
        rows = server.query("SELECT COUNT(*) FROM raw_orders")
        done = cli("init", "--upgrade", "--target", "snowflake", env=server.env())
        assert done.returncode == 0, done.stdout + done.stderr
        assert _dynamic(server) == {
            "ORDERS_AGGREGATED": ("INCREMENTAL", "DOWNSTREAM"),
            "ORDERS_DERIVED_ROWS": ("INCREMENTAL", "DOWNSTREAM"),
        }
        views = server.query(
            "SELECT table_name FROM information_schema.views WHERE table_name = 'ORDERS_DERIVED'"
        )
        assert views == [("ORDERS_DERIVED",)]
        assert server.query("SELECT COUNT(*) FROM raw_orders") == rows
        again = _run(server, "--events", "1200")
        assert not _events(again, "warehouse.layers_outdated")


def test_target_lag_instead_of_the_task_and_a_warehouse_of_its_own() -> None:
    """CDC_LAYERS_REFRESH=target-lag: orders_aggregated gets TARGET_LAG = '2 minutes' (set on
    a target made with the task) and no task is made; CDC_LAYERS_WAREHOUSE is the layers'."""
    with Server() as server:
        lines = _run(server, CDC_LAYERS_REFRESH="target-lag", CDC_LAYERS_WAREHOUSE="LAYERS_WH")
        assert _task_state(server) == []
        assert _dynamic(server)["ORDERS_AGGREGATED"] == ("INCREMENTAL", "2 minutes")
        creates = [s for s in _sent(server) if "CREATE DYNAMIC TABLE" in s.upper()]
        assert creates and all("WAREHOUSE = LAYERS_WH" in s for s in creates)
        assert not _events(lines, "warehouse.task_beside_target_lag")
    with Server() as server:
        _run(server)  # made with the task
        since = len(server.gate.statements)
        lines = _run(server, "--events", "900", CDC_LAYERS_REFRESH="target-lag")
        assert "ALTER DYNAMIC TABLE orders_aggregated SET TARGET_LAG = '2 minutes'" in _sent(
            server, since
        )
        assert _dynamic(server)["ORDERS_AGGREGATED"][1] == "2 minutes"
        (warning,) = _events(lines, "warehouse.task_beside_target_lag")
        assert "SUSPEND" in warning["then"]


def test_tasks_show_each_refresh_action_and_not_the_next_scheduled_run() -> None:
    """`tasks` on Snowflake: the task's runs (not the next SCHEDULED one TASK_HISTORY also
    lists), each with what it did to each dynamic table: INCREMENTAL while orders changed,
    NO_DATA once nothing changed."""
    with Server() as server:
        server.gate.account.objects.task_speed = 40  # every 3 s instead of 2 minutes
        _run(server, "--events", "3000", "--rate", "400")  # 7.5 s: two runs or more
        wait_for = time.monotonic() + 60
        while True:  # a task run after the stream ended: nothing to do (the final refresh,
            # a manual one, can be NO_DATA first: it is not the task's)
            done = cli("tasks", "--target", "snowflake", env={**server.env(), "COLUMNS": "400"})
            assert done.returncode == 0, done.stdout + done.stderr
            runs = [ln for ln in done.stdout.splitlines() if "REFRESH_ORDERS_AGG " in ln]
            if any("orders_aggregated NO_DATA" in ln for ln in runs) or time.monotonic() > wait_for:
                break
            time.sleep(1)
        assert runs and not any("SCHEDULED" in ln for ln in runs), done.stdout
        assert any("orders_aggregated INCREMENTAL" in ln for ln in runs), done.stdout
        assert any("orders_aggregated NO_DATA" in ln for ln in runs), done.stdout
        assert "ORDERS_AGGREGATED (creation)" in done.stdout
        scheduled = server.query(
            "SELECT COUNT(*) FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY()) WHERE query_id IS NULL"
        )
        assert scheduled == [(1,)], "the emulator lists the next run, as Snowflake does"
