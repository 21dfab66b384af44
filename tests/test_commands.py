"""The subcommands as a user runs them (real processes, a DuckDB target the pipeline wrote)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import duckdb
import pytest

from service import commands
from service.config import ConfigError

from .conftest import START, cli
from .helpers import duckdb_rows

RUN = ("--events", "20000", "--seed", "7", "--start", START)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("commands") / "written.duckdb"
    done = cli("run", *RUN, "--duckdb-path", str(path))
    assert done.returncode == 0, done.stderr + done.stdout
    return path


@pytest.fixture
def target(written: Path, tmp_path: Path) -> Path:
    path = tmp_path / "target.duckdb"
    shutil.copy(written, path)
    return path


def _tables(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        found = con.execute("SELECT table_name FROM information_schema.tables").fetchall()
        return {r[0] for r in found}
    finally:
        con.close()


def test_run_prepares_the_layers_on_first_start(written: Path) -> None:
    """`run` applies sql/ before streaming: the layers and the local task history exist."""
    want = {"raw_orders", "orders_derived", "orders_aggregated", "cdc_task_history"}
    assert want <= _tables(written)


def test_init_is_idempotent(tmp_path: Path) -> None:
    """`init` on a new file creates everything; a second `init` changes nothing and succeeds."""
    path = tmp_path / "new.duckdb"
    first = cli("init", "--target", "duckdb", "--duckdb-path", str(path))
    assert first.returncode == 0, first.stderr
    assert "orders_aggregated" in first.stdout and "cdc_task_history" in first.stdout
    tables = _tables(path)
    again = cli("init", "--target", "duckdb", "--duckdb-path", str(path))
    assert again.returncode == 0, again.stderr
    assert _tables(path) == tables


def test_refresh_then_report_prints_months_by_metrics(target: Path) -> None:
    """`refresh` rebuilds the layers; `report` prints one row per month with every metric."""
    done = cli("refresh", "--duckdb-path", str(target))
    assert done.returncode == 0, done.stderr
    assert re.search(r"refreshed orders_derived, orders_aggregated: [\d,]+ rows", done.stdout)
    shown = cli("report", "--duckdb-path", str(target))
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    con = duckdb.connect(str(target), read_only=True)
    rows = con.execute(
        "SELECT order_year, order_month, total_orders, total_revenue FROM orders_aggregated "
        "ORDER BY 1, 2"
    ).fetchall()
    con.close()
    assert len(rows) >= 3
    for year, month, orders, revenue in rows:
        line = next(ln for ln in out.splitlines() if f"{year}-{month:02d}" in ln)
        assert f"{orders:,}" in line and f"{revenue:,.2f}" in line
    header = out.split("┡")[0]  # long names are broken after an underscore
    for metric in (
        "total_orders",
        "average_order_value",
        "unique_customers",
        "total_high_value_orders",
        "high_value_order_count",
        "low_value_order_count",
    ):
        assert all(part in header for part in commands._header(metric, 12).splitlines()), metric


def test_report_tasks_verify_on_a_missing_file_are_configuration_errors(tmp_path: Path) -> None:
    """A DuckDB path with no database: exit 2, one line, and no file is created."""
    path = tmp_path / "nothing.duckdb"
    for command in ("report", "verify"):
        done = cli(command, "--target", "duckdb", "--duckdb-path", str(path))
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.count("\n") == 1 and "no database at" in done.stderr
    assert not path.exists()


def test_query_prints_a_table_and_refuses_writes(target: Path) -> None:
    """`query` runs one read-only statement; a write is refused (exit 2) and changes nothing."""
    sql = "SELECT status, COUNT(*) AS n FROM raw_orders GROUP BY status ORDER BY n DESC"
    before = duckdb_rows(target)
    assert before
    done = cli("query", sql, "--duckdb-path", str(target))
    assert done.returncode == 0, done.stderr
    assert "PENDING" in done.stdout and "6 rows" in done.stdout
    refused = cli("query", "DELETE FROM raw_orders", "--duckdb-path", str(target))
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr == (
        "ecomm-cdc: error: query: only a read-only query (SELECT, WITH, UNION) runs; got DELETE\n"
    )
    assert duckdb_rows(target) == before
    broken = cli("query", "SELECT * FROM no_such_table", "--duckdb-path", str(target))
    assert broken.returncode == 1 and "no_such_table" in broken.stderr
    assert "Traceback" not in broken.stderr


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE raw_orders",
        "SELECT 1; DROP TABLE raw_orders",
        "CREATE TABLE x AS SELECT 1",
        "SELECT * INTO copy FROM raw_orders",
        "WITH a AS (SELECT 1) INSERT INTO raw_orders SELECT * FROM raw_orders",
        "UPDATE raw_orders SET amount = 0",
        "COPY raw_orders TO 'out.csv'",
        "SELECT (",
    ],
)
def test_read_only_refuses_anything_but_one_query(sql: str) -> None:
    """Writes, DDL, several statements and bad SQL are refused before reaching the target."""
    with pytest.raises(ConfigError):
        commands.read_only(sql, "duckdb")


def test_read_only_accepts_queries() -> None:
    """SELECT, WITH, UNION and the seed's own queries pass, in either dialect."""
    for sql in (
        "SELECT * FROM raw_orders",
        "WITH a AS (SELECT 1 AS x) SELECT x FROM a",
        "SELECT 1 UNION ALL SELECT 2",
        "SELECT * FROM orders_aggregated",
    ):
        assert commands.read_only(sql, "duckdb") == sql
    seed = (
        "SELECT * FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY(TASK_NAME=>'refresh_orders_agg')) "
        "ORDER BY SCHEDULED_TIME"
    )
    assert commands.read_only(seed, "snowflake") == seed


def test_query_caps_what_it_prints(target: Path) -> None:
    """A large result prints its first 1,000 rows and says so."""
    done = cli("query", "SELECT * FROM raw_orders", "--duckdb-path", str(target))
    assert done.returncode == 0
    assert "first 1,000 rows (add a LIMIT)" in done.stdout
    assert done.stdout.count("ORD-0-") == 1000


def test_run_refreshes_on_schedule(tmp_path: Path) -> None:
    """While `run` runs, the layers are refreshed every CDC_REFRESH_INTERVAL seconds."""
    path = tmp_path / "scheduled.duckdb"
    done = cli(
        "run",
        "--duration",
        "1.6",
        "--rate",
        "4000",
        "--seed",
        "7",
        "--start",
        START,
        "--duckdb-path",
        str(path),
        env={"CDC_REFRESH_INTERVAL": "0.4"},
    )
    assert done.returncode == 0, done.stdout[-2000:]
    shown = cli("tasks", "--duckdb-path", str(path))
    assert shown.returncode == 0
    runs = re.search(r"(\d+) runs: (\d+) SUCCEEDED", shown.stdout)
    assert runs is not None and int(runs.group(1)) >= 3 and runs.group(1) == runs.group(2)
