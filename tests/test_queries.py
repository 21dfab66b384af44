"""`query` speaks Snowflake's dialect on every target; query, report and tasks print table/CSV/JSON.

Real processes on a DuckDB file the pipeline wrote (and on the emulator), each
result compared with what DuckDB itself holds.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from service import formats
from service.config import ConfigError
from service.sinks.duckdb import DuckSession
from service.warehouse import scheduler, sqlfiles
from service.watch import dialect, reads

from . import doctext
from .conftest import cli
from .helpers import duckdb_rows

# The original project's README, section "Snowflake Queries", verbatim.
SEED_QUERIES = [
    "SELECT * FROM raw_orders;",
    "SELECT * FROM orders_derived;",
    "SELECT * FROM orders_aggregated;",
    "SELECT * FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY(TASK_NAME=>'refresh_orders_agg')) ORDER BY SCHEDULED_TIME;",
]
# Orders dated March to May 2026: order_year is 2026, order_month 3 to 5.
RUN = ("--events", "4000", "--seed", "7", "--start", "2026-06-01T00:00:00")


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("queries") / "queries.duckdb"
    done = cli("run", *RUN, "--duckdb-path", str(path))
    assert done.returncode == 0, done.stderr
    return path


def _duck(path: Path, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        cur = con.execute(sql)
        return [d[0] for d in cur.description], cur.fetchall()
    finally:
        con.close()


def _query(path: Path, sql: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return cli("query", sql, "--duckdb-path", str(path), *flags)


def _ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout


def _one_line(done: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


def _json(done: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    rows = json.loads(_ok(done))
    assert isinstance(rows, list)
    return rows


# -- the original project's queries, verbatim ---------------------------------------------


def test_the_original_queries_run_verbatim_on_duckdb(written: Path) -> None:
    """The seed README's four queries run as written on DuckDB; each prints what DuckDB holds."""
    shown = [_ok(_query(written, sql)) for sql in SEED_QUERIES]
    raw, derived, aggregated, tasks = shown
    assert "first 1,000 rows (add a LIMIT)" in raw and raw.count("ORD-0-") == 1000
    assert "first 1,000 rows (add a LIMIT)" in derived and "order_value_category" in derived
    months = _duck(written, "SELECT order_year, order_month FROM orders_aggregated")[1]
    assert months and aggregated.rstrip().endswith(f"\n{len(months)} rows")
    for year, month in months:
        assert re.search(rf"│\s+{year} │\s+{month} │", aggregated), (year, month)
    runs = _duck(written, "SELECT state FROM cdc_task_history")[1]
    assert runs and tasks.rstrip().endswith(f"\n{len(runs)} rows")
    assert tasks.count("REFRESH_ORDERS_AGG") == len(runs)
    header = tasks.split("┡")[0]
    for column in ("NAME", "STATE", "SCHEDULED_TIME", "QUERY_START_TIME", "COMPLETED_TIME"):
        assert column in header


def test_the_original_queries_run_verbatim_on_the_emulator(tmp_path: Path) -> None:
    """The same four on the emulator (exit 0 each); TASK_HISTORY reads the runs the service
    played there, with TASK_HISTORY's column names, oldest first."""
    env = {"CDC_EMULATOR_PATH": str(tmp_path / "emulator")}
    target = ("--target", "emulator")
    done = cli("run", *target, *RUN[:1], "800", *RUN[2:], env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    raw, derived, aggregated, tasks = (
        _json(cli("query", sql, *target, "--format", "json", env=env, timeout=120))
        for sql in SEED_QUERIES
    )
    ids = {r["ORDER_ID"] for r in raw}
    assert 0 < len(ids) == len(raw) < 1000, "fewer orders than the row cap: all of them came"
    assert {r["ORDER_ID"] for r in derived} == ids
    assert {r["ORDER_VALUE_CATEGORY"] for r in derived} <= {"High Value", "Low Value"}
    assert {(r["ORDER_YEAR"], r["ORDER_MONTH"]) for r in aggregated} <= {
        (2026, m) for m in (3, 4, 5)
    }
    assert sum(r["TOTAL_ORDERS"] for r in aggregated) == len(ids)
    assert tasks and list(tasks[0]) == list(dialect.TASK_HISTORY_COLUMNS)
    assert {(r["NAME"], r["STATE"], r["DATABASE_NAME"]) for r in tasks} == {
        ("REFRESH_ORDERS_AGG", "SUCCEEDED", "ECOMM")
    }
    times = [r["SCHEDULED_TIME"] for r in tasks]
    assert times == sorted(times)


# -- TASK_HISTORY, locally ----------------------------------------------------------------


@pytest.fixture
def history() -> Iterator[DuckSession]:
    """An in-memory database whose cdc_task_history holds five runs, the fourth FAILED."""
    session = DuckSession(duckdb.connect())
    for stmt in sqlfiles.local_ddl("duckdb"):
        session.execute(stmt)
    t0 = dt.datetime(2026, 3, 1, 12, 0)
    for i in range(5):
        at = t0 + dt.timedelta(minutes=2 * i)
        state, error = ("FAILED", "boom") if i == 3 else ("SUCCEEDED", None)
        run = scheduler.Run(scheduler.TASK, at, at, at, state, error, i)
        scheduler.record(session, run)
    try:
        yield session
    finally:
        session.close()


def _minutes(rows: reads.Rows, column: int = 0) -> list[int]:
    return [r[column].minute for r in rows.rows]


def test_task_history_honours_its_arguments_as_snowflake_does(history: DuckSession) -> None:
    """TASK_NAME (any case), RESULT_LIMIT (the latest runs), ERROR_ONLY; columns in any case."""

    def ask(args: str, select: str = "SCHEDULED_TIME") -> reads.Rows:
        sql = (
            f"select {select} from table(information_schema.task_history({args})) "  # noqa: S608
            "order by scheduled_time"
        )
        return reads.query(history, sql)

    assert _minutes(ask("")) == [0, 2, 4, 6, 8]
    assert _minutes(ask("task_name => 'Refresh_Orders_Agg'")) == [0, 2, 4, 6, 8]
    assert ask("TASK_NAME => 'another_task'").rows == []
    assert _minutes(ask("RESULT_LIMIT => 2")) == [6, 8]
    failed = ask("ERROR_ONLY => TRUE, TASK_NAME => 'refresh_orders_agg'", "*")
    assert failed.columns == list(dialect.TASK_HISTORY_COLUMNS)
    state, error = failed.columns.index("STATE"), failed.columns.index("ERROR_MESSAGE")
    assert [(r[state], r[error]) for r in failed.rows] == [("FAILED", "boom")]
    aliased = reads.query(
        history,
        "SELECT h.Name, H.state FROM TABLE(Information_Schema.Task_History()) AS h "
        "WHERE h.State = 'FAILED'",
    )
    assert aliased.rows == [("REFRESH_ORDERS_AGG", "FAILED")]


@pytest.mark.parametrize(
    ("sql", "said"),
    [
        (
            "SELECT * FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY("
            "SCHEDULED_TIME_RANGE_START => DATEADD('hour', -1, CURRENT_TIMESTAMP())))",
            "TASK_HISTORY(SCHEDULED_TIME_RANGE_START => DATEADD(",
        ),
        (
            "SELECT * FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY(RESULT_LIMIT => 0))",
            "TASK_HISTORY(RESULT_LIMIT => 0) does not translate to DuckDB: RESULT_LIMIT is 1 to",
        ),
        (
            "SELECT * FROM TABLE(INFORMATION_SCHEMA.QUERY_HISTORY())",
            "INFORMATION_SCHEMA.QUERY_HISTORY does not translate to DuckDB: only TASK_HISTORY",
        ),
        (
            "SELECT TO_VARCHAR(scheduled_time, 'YYYY-MM') FROM cdc_task_history",
            "the SQL does not translate to DuckDB: UnsupportedError: Argument 'format'",
        ),
        ("SELECT (", "the SQL does not parse in Snowflake's dialect: ParseError"),
        (
            "SELECT * FROM cdc_task_history AT(OFFSET => -60)",
            "the SQL does not translate to DuckDB: ParserException",
        ),
    ],
)
def test_what_does_not_translate_is_named(history: DuckSession, sql: str, said: str) -> None:
    """Snowflake SQL with no local equivalent, or no parse: one line naming it (exit 2)."""
    with pytest.raises(ConfigError) as caught:
        reads.query(history, sql)
    assert said in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("CREATE OR REPLACE TABLE stolen CLONE cdc_task_history", "CREATE"),
        ("INSERT OVERWRITE INTO cdc_task_history SELECT * FROM cdc_task_history", "INSERT"),
        ("DELETE FROM cdc_task_history USING cdc_task_history h WHERE h.name = 'x'", "DELETE"),
        ("COPY INTO @stage FROM cdc_task_history", "COPY"),
        ("UNDROP TABLE cdc_task_history", "UNDROP"),
        ("ALTER SESSION SET TIMEZONE = 'UTC'", "ALTER"),
        ("SELECT * FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY()); DELETE FROM x", "statement"),
    ],
)
def test_a_write_in_snowflakes_dialect_is_refused_everywhere(
    history: DuckSession, sql: str, kind: str
) -> None:
    """Snowflake writes are refused on DuckDB, the emulator and Snowflake alike, before running."""
    for target, local in (("duckdb", True), ("snowflake", True), ("snowflake", False)):
        with pytest.raises(ConfigError, match=kind):
            dialect.for_target(sql, target, local)
    with pytest.raises(ConfigError, match=kind):
        reads.query(history, sql)
    assert len(reads.query(history, "SELECT * FROM cdc_task_history").rows) == 5


def test_snowflake_sql_is_translated_and_duckdb_sql_still_runs(history: DuckSession) -> None:
    """Snowflake's functions mean what they mean on Snowflake; DuckDB-only syntax still runs."""
    snow = reads.query(
        history,
        "SELECT IFF(state = 'FAILED', 1, 0) AS failed, DATEADD(day, 1, scheduled_time) AS next "
        "FROM cdc_task_history ORDER BY scheduled_time",
    )
    assert [r[0] for r in snow.rows] == [0, 0, 0, 1, 0]
    assert snow.rows[0][1] == dt.datetime(2026, 3, 2, 12, 0)
    duck = reads.query(history, "SELECT 2 ** 10 AS n")  # not Snowflake SQL: read as DuckDB's
    assert duck.rows == [(1024,)]


# -- the commands, on DuckDB ----------------------------------------------------------------


def test_a_snowflake_write_and_an_untranslatable_query_are_one_line(
    written: Path, tmp_path: Path
) -> None:
    """Through the command: a Snowflake write exits 2 and changes nothing; so does SQL that
    does not translate, in one line naming what failed."""
    target = tmp_path / "target.duckdb"
    shutil.copy(written, target)
    before = duckdb_rows(target)
    write = _one_line(_query(target, "CREATE OR REPLACE TABLE raw_orders CLONE orders_derived"))
    assert write == (
        "ecomm-cdc: error: query: only a read-only query (SELECT, WITH, UNION) runs; got CREATE\n"
    )
    assert duckdb_rows(target) == before
    odd = _one_line(_query(target, "SELECT TO_VARCHAR(order_date, 'YYYY-MM') FROM raw_orders"))
    assert odd.startswith("ecomm-cdc: error: query: the SQL does not translate to DuckDB: ")


def test_csv_and_json_carry_the_rows_duckdb_holds(written: Path) -> None:
    """--format csv and json parse with Python's csv and json modules and hold DuckDB's rows,
    decimals and timestamps exact."""
    sql = "SELECT * FROM raw_orders ORDER BY order_id LIMIT 300"
    columns, rows = _duck(written, sql)
    as_csv = list(csv.reader(io.StringIO(_ok(_query(written, sql, "--format", "csv")))))
    assert as_csv[0] == columns and len(as_csv) == len(rows) + 1
    as_json = _json(_query(written, sql, "--format", "json"))
    assert [list(r) for r in as_json] == [columns] * len(rows)
    for want, got_csv, got_json in zip(rows, as_csv[1:], as_json, strict=True):
        oid, cust, when, status, amount, product, qty = want
        for got in (got_csv, list(got_json.values())):
            assert got[:2] == [oid, cust] and got[3] == status and got[5] == product
            assert dt.datetime.fromisoformat(got[2]) == when
            assert Decimal(got[4]) == amount and got[4] == str(amount)
        assert got_csv[6] == str(qty) and got_json["quantity"] == qty


def test_json_values_are_lossless_and_the_row_cap_goes_to_stderr(written: Path) -> None:
    """Big integers, decimals, timestamps and NULL survive JSON and CSV; a capped result says
    so on stderr, leaving stdout parseable."""
    sql = (
        "SELECT CAST('123456789012345678901234567890' AS NUMBER(38, 0)) AS big, "
        "9007199254740993 AS past_double, 12.30::NUMBER(10, 2) AS money, "
        "'2026-03-04 05:06:07.123456'::TIMESTAMP_NTZ AS at, NULL AS nothing"
    )
    (row,) = _json(_query(written, sql, "--format", "json"))
    assert row == {
        "big": "123456789012345678901234567890",
        "past_double": "9007199254740993",
        "money": "12.30",
        "at": "2026-03-04T05:06:07.123456",
        "nothing": None,
    }
    head, values = csv.reader(io.StringIO(_ok(_query(written, sql, "--format", "csv"))))
    assert dict(zip(head, values, strict=True)) == {k: v or "" for k, v in row.items()}
    capped = _query(written, "SELECT order_id FROM raw_orders", "--format", "json")
    assert len(_json(capped)) == 1000
    assert capped.stderr == "ecomm-cdc: first 1,000 rows (add a LIMIT)\n"


def test_report_and_tasks_print_csv_and_json(written: Path) -> None:
    """report and tasks: --format csv and json carry orders_aggregated and the task history."""
    columns, rows = _duck(written, "SELECT * FROM orders_aggregated ORDER BY 1, 2")
    shown = cli("report", "--duckdb-path", str(written), "--format", "csv")
    report = list(csv.DictReader(io.StringIO(_ok(shown))))
    assert [(int(r["order_year"]), int(r["order_month"])) for r in report] == [
        (r[0], r[1]) for r in rows
    ]
    revenue = columns.index("total_revenue")
    assert [Decimal(r["total_revenue"]) for r in report] == [r[revenue] for r in rows]
    runs = _duck(written, "SELECT name, state, scheduled_time FROM cdc_task_history ORDER BY 3")[1]
    tasks = _json(cli("tasks", "--duckdb-path", str(written), "--format", "json"))
    at = dt.datetime.fromisoformat
    assert [(t["name"], t["state"], at(t["scheduled_time"])) for t in tasks] == runs


def test_years_months_and_ids_print_without_separators(written: Path) -> None:
    """In a table, order_year prints as 2026 and order_month as 3; other numbers keep commas."""
    shown = _ok(_query(written, "SELECT * FROM orders_aggregated ORDER BY order_year, order_month"))
    assert re.search(r"│\s+2026 │\s+3 │", shown), shown
    assert "2,026" not in shown
    synthetic = _ok(
        _query(
            written,
            "SELECT 2026 AS order_year, 12345 AS partition_id, 1234567 AS total_orders, "
            "YEAR(CURRENT_DATE()) > 0 AS flag, 1234.5 AS amount",
        )
    )
    assert re.search(r"│\s+2026 │\s+12345 │\s+1,234,567 │ True\s+│\s+1,234.5 │", synthetic), (
        synthetic
    )


@pytest.mark.parametrize(
    ("column", "plain"),
    [
        ("order_year", True),
        ("ORDER_MONTH", True),
        ("partition_id", True),
        ("id", True),
        ("year(order_date)", True),
        ("EXTRACT(month FROM order_date)", True),
        ("total_orders", False),
        ("paid", False),
        ("yearly_revenue", False),
        ("month_revenue", False),
    ],
)
def test_which_columns_print_plain(column: str, plain: bool) -> None:
    """Years, months and ids by their column names; every other number keeps its separators."""
    assert formats.plain_number(column) is plain


def test_docs_queries_shows_the_seed_queries_and_the_read_commands() -> None:
    """docs/queries.md shows the seed's four queries verbatim, first, and only query, report and
    tasks (that each of its command lines parses is test_docs.py's check, for every page)."""
    page = Path(__file__).parent.parent / "docs" / "queries.md"
    shown = [argv for _, argv in doctext.cli_commands(page)]
    assert len(shown) >= 7
    assert {argv[0] for argv in shown} == {"query", "report", "tasks"}
    assert [argv[1] for argv in shown if argv[0] == "query"][:4] == SEED_QUERIES
