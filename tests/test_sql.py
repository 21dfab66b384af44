"""sql/ is Snowflake SQL, parsed in full, and the local layers are translated from it."""

from __future__ import annotations

import datetime as dt
from typing import cast

import duckdb
import pytest
import sqlglot
from sqlglot import exp

from service.config import ConfigError, Names
from service.sinks.duckdb import DuckSession
from service.sinks.emulator.replies import calls_now
from service.warehouse import decompose, layers, scheduler, sqlfiles

from .helpers import two_orders

NAMES = Names(warehouse="TRANSFORM_WH")
SEED_DERIVED = [
    "order_id",
    "customer_id",
    "order_date",
    "status",
    "amount",
    "product_id",
    "quantity",
    "order_year",
    "order_month",
    "order_value_category",
    "order_completion_status",
    "days_since_order",
]
SEED_AGGREGATED = [
    "order_year",
    "order_month",
    "total_orders",
    "total_revenue",
    "average_order_value",
    "unique_customers",
    "total_items_sold",
    "total_delivered_revenue",
    "total_high_value_orders",
    "total_low_value_orders",
]
HONEST_COUNTS = ["high_value_order_count", "low_value_order_count"]


def _parsed(name: str) -> list[exp.Expression]:
    text = dict(sqlfiles.files())[name]
    with sqlfiles.quiet_sqlglot():
        parsed = sqlglot.parse(
            sqlfiles.render(text, NAMES), read="snowflake", error_level=sqlglot.ErrorLevel.RAISE
        )
    return [cast(exp.Expression, e) for e in parsed if e is not None]


def test_every_sql_file_parses_as_snowflake() -> None:
    """Each file parses strictly with the Snowflake dialect; only the TASK statements are raw."""
    names = [n for n, _ in sqlfiles.files()]
    assert names[:2] == ["001_raw_orders.sql", "002_cdc_state.sql"]
    assert {
        "010_orders_derived.sql",
        "011_orders_aggregated.sql",
        "020_refresh_task.sql",
        "030_local_task_history.sql",
    } <= set(names)
    raw: list[str] = []
    for name in names:
        stmts = [e for e in _parsed(name) if e is not None]
        assert stmts, name
        for e in stmts:
            if isinstance(e, exp.Command):
                raw.append(f"{name}: {e.sql('snowflake', comments=False).split(' AS ')[0]}")
            else:
                assert isinstance(e, exp.Create | exp.Alter), (name, e.sql())
                # Round trip: what sqlglot understood is what the file says.
                assert sqlglot.parse_one(e.sql("snowflake"), read="snowflake") == e
    # sqlglot has no grammar for tasks: exactly these stay raw, checked by test_the_task below.
    assert [r.split(":")[0] for r in raw] == ["020_refresh_task.sql"] * 2
    assert "CREATE TASK IF NOT EXISTS refresh_orders_agg" in raw[0]
    assert raw[1].endswith("ALTER TASK refresh_orders_agg RESUME")


def _props(create: exp.Create) -> dict[str, str]:
    return {
        p.name.upper(): p.text("value")
        for p in create.args["properties"].expressions
        if isinstance(p, exp.Property) and not isinstance(p, exp.DynamicProperty)
    }


def test_the_layers_keep_the_seeds_names_and_columns_and_add_honest_counts() -> None:
    """orders_derived (a view over the dynamic table orders_derived_rows) has the seed's
    columns; orders_aggregated (a dynamic table) the seed's, then the honest counts."""
    rows, view = _parsed("010_orders_derived.sql")
    assert isinstance(rows, exp.Create) and rows.this.name == "orders_derived_rows"
    assert (
        isinstance(view, exp.Create) and view.kind == "VIEW" and view.this.name == "orders_derived"
    )
    assert [s.alias_or_name for s in view.expression.selects] == SEED_DERIVED
    assert [s.alias_or_name for s in rows.expression.selects] == SEED_DERIVED[:-1]
    assert view.args.get("exists"), "IF NOT EXISTS: a view of that name is left alone"
    (agg,) = _parsed("011_orders_aggregated.sql")
    assert agg.this.name == "orders_aggregated"
    assert [s.alias_or_name for s in agg.expression.selects] == SEED_AGGREGATED + HONEST_COUNTS
    sums = {s.alias: s.this for s in agg.expression.selects if s.alias}
    # The seed's misleading names stay sums of amounts; the honest ones count orders.
    assert isinstance(sums["total_high_value_orders"], exp.Sum)
    assert isinstance(sums["high_value_order_count"], exp.Count)


def test_every_dynamic_table_is_incremental_and_reads_no_clock() -> None:
    """Every dynamic table says REFRESH_MODE = INCREMENTAL (Snowflake refuses, at creation, what
    it could not keep incrementally) and calls no current-time function; the aggregate reads
    the dynamic table, not the view; days_since_order is in the view."""
    creates = [
        e
        for name, _ in sqlfiles.files()
        for e in _parsed(name)
        if isinstance(e, exp.Create)
        and e.args.get("properties") is not None
        and any(isinstance(p, exp.DynamicProperty) for p in e.args["properties"].expressions)
    ]
    assert sorted(c.this.name for c in creates) == ["orders_aggregated", "orders_derived_rows"]
    for create in creates:
        props = _props(create)
        assert props["REFRESH_MODE"] == "INCREMENTAL", create.this.name
        assert props["WAREHOUSE"] == "TRANSFORM_WH", create.this.name
        assert create.args.get("exists"), "IF NOT EXISTS: init and run must not rebuild it"
        assert calls_now(create.expression) is None, create.this.name
        assert not any(decompose.now_dependent(n) for n in create.expression.walk())
    (agg,) = [c for c in creates if c.this.name == "orders_aggregated"]
    assert [t.name for t in agg.expression.find_all(exp.Table)] == ["orders_derived_rows"]
    (view,) = sqlfiles.views(NAMES)
    assert calls_now(view.select) is not None, "the view computes the age when it is read"


def test_the_task() -> None:
    """refresh_orders_agg: every 2 minutes, on the configured warehouse, refreshes the aggregate."""
    task = sqlfiles.task_definition(NAMES)
    assert task == {
        "name": "refresh_orders_agg",
        "WAREHOUSE": "TRANSFORM_WH",
        "SCHEDULE": "2 MINUTE",
        "body": "ALTER DYNAMIC TABLE orders_aggregated REFRESH",
    }
    assert sqlfiles.refresh_statement() == task["body"]
    assert [ly.name for ly in sqlfiles.layers()] == ["orders_derived_rows", "orders_aggregated"]
    assert [v.name for v in sqlfiles.views()] == ["orders_derived"]


def test_snowflake_ddl_runs_the_files_as_written_with_validated_names() -> None:
    """On Snowflake the files run verbatim (rendered), in order; a bad name is refused; the
    target lag follows the setting."""
    ddl = sqlfiles.layer_ddl(NAMES) + sqlfiles.task_ddl(NAMES)
    heads = [
        " ".join(ln for ln in s.splitlines() if not ln.startswith("--")).split()[:7] for s in ddl
    ]
    assert [" ".join(h) for h in heads] == [
        "CREATE DYNAMIC TABLE IF NOT EXISTS orders_derived_rows",
        "CREATE VIEW IF NOT EXISTS orders_derived AS",
        "CREATE DYNAMIC TABLE IF NOT EXISTS orders_aggregated",
        "CREATE TASK IF NOT EXISTS refresh_orders_agg WAREHOUSE",
        "ALTER TASK refresh_orders_agg RESUME",
    ]
    assert all("{{" not in s for s in ddl)
    assert sum("WAREHOUSE = TRANSFORM_WH" in s for s in ddl) == 3
    assert "TARGET_LAG = DOWNSTREAM" in ddl[2]
    lagged = sqlfiles.layer_ddl(Names(warehouse="W", target_lag="'2 minutes'"))
    assert "TARGET_LAG = '2 minutes'" in lagged[2] and "TARGET_LAG = DOWNSTREAM" in lagged[0]
    with pytest.raises(ConfigError, match="SNOWFLAKE_WAREHOUSE"):
        sqlfiles.layer_ddl(Names(warehouse="WH; DROP TABLE raw_orders"))
    with pytest.raises(ConfigError, match="CDC_LAYERS_REFRESH"):
        Names(target_lag="'1 second'; DROP TABLE raw_orders")


def test_local_translation_is_produced_from_the_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Change the file's SELECT and the local table changes: nothing is kept in a second copy."""
    con = two_orders("001", first_quantity=1)
    layers.materialize(DuckSession(con))
    q = "SELECT high_value_order_count, total_high_value_orders FROM orders_aggregated"
    assert con.execute(q).fetchall() == [(1, 150)]
    files = tuple(
        (n, t.replace("amount > 100", "amount > 50") if n.startswith("010") else t)
        for n, t in sqlfiles.files()
    )
    monkeypatch.setattr(sqlfiles, "files", lambda: files)
    (derived, _) = sqlfiles.layers()
    assert "amount > 50" in derived.local_sql("duckdb")
    layers.materialize(DuckSession(con))
    assert con.execute(q).fetchall() == [(2, 210)]


def _days_expr(dialect: str, now: str | None = None) -> str:
    """days_since_order as the file writes it, translated; ``now`` replaces SYSDATE()."""
    (derived,) = sqlfiles.views()
    (expr,) = [s.this for s in derived.select.selects if s.alias == "days_since_order"]
    expr = expr.copy()
    if now is not None:
        expr = expr.transform(
            lambda n: (
                exp.cast(exp.Literal.string(now), "TIMESTAMP")
                if isinstance(n, exp.CurrentTimestamp)
                else n
            )
        )
    return str(expr.sql(dialect))


def test_days_since_order_counts_day_boundaries_in_utc() -> None:
    """DATEDIFF('day') counts midnights crossed (23:59:59 is a day before), in any session zone."""
    con = duckdb.connect()
    con.execute("CREATE TABLE t (order_date TIMESTAMP)")
    fixed = _days_expr("duckdb", now="2026-01-01 00:00:01")
    con.execute(
        "INSERT INTO t VALUES (TIMESTAMP '2025-12-31 23:59:59'), (TIMESTAMP '2026-01-01 00:00:00'),"
        " (TIMESTAMP '2025-12-29 00:00:02')"
    )
    assert [r[0] for r in con.execute(f"SELECT {fixed} FROM t").fetchall()] == [1, 0, 3]  # noqa: S608
    # With the real "now": the same count whatever the session's time zone.
    today = dt.datetime.now(dt.UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0)
    con.execute("DELETE FROM t")
    dates = [today, today - dt.timedelta(seconds=1), today - dt.timedelta(days=40, hours=-5)]
    con.executemany("INSERT INTO t VALUES (?)", [(d,) for d in dates])
    live = _days_expr("duckdb")
    assert "UTC" in live
    for zone in ("America/Los_Angeles", "Pacific/Kiritimati", "UTC"):
        con.execute(f"SET TimeZone = '{zone}'")
        got = [r[0] for r in con.execute(f"SELECT {live} FROM t").fetchall()]  # noqa: S608
        assert got == [0, 1, 40], zone


def test_history_queries_parse() -> None:
    """`tasks` reads TASK_HISTORY on Snowflake and cdc_task_history locally: both parse."""
    sf = sqlglot.parse_one(scheduler.history_sql(local=False), read="snowflake")
    assert "TASK_HISTORY" in sf.sql("snowflake") and "REFRESH_ORDERS_AGG" in sf.sql("snowflake")
    local = sqlglot.parse_one(scheduler.history_sql(local=True), read="duckdb")
    assert isinstance(local, exp.Select)
