"""The commands during a run: `ecomm-cdc run` holds the DuckDB file, the commands go through it.

Real processes throughout: the service streams unbounded at a modest rate, and
`query`, `report`, `tasks` and `verify` run beside it as a user types them,
on the same path, with nothing telling them a service is there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import pytest

from service.watch import discovery

from .conftest import START, cli, spawn
from .test_lifecycle import applied, free_port, get, wait_for

RATE = "2000"  # events/s: modest, and enough to see the table grow between two queries


def _count(db: Path) -> int:
    done = cli("query", "SELECT count(*) AS n FROM raw_orders", "--duckdb-path", str(db))
    assert done.returncode == 0, done.stderr
    found = re.search(r"│\s+([\d,]+) │", done.stdout)
    assert found is not None, done.stdout
    return int(found.group(1).replace(",", ""))


def _one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("ecomm-cdc: error: query: "), done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty HOME for the service: an INSTALL that got through would leave ~/.duckdb there."""
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def running(tmp_path: Path, home: Path) -> Iterator[tuple[Path, int, subprocess.Popen[str]]]:
    db, port = tmp_path / "live.duckdb", free_port()
    proc = spawn(
        "run", "--seed", "7", "--start", START, "--duckdb-path", str(db), "--rate", RATE,
        env={"CDC_HTTP_PORT": str(port), "CDC_REFRESH_INTERVAL": "1", "HOME": str(home),
             "CDC_QUERY_TIMEOUT": "2"},
    )  # fmt: skip
    try:
        wait_for(lambda: applied(port) > 0)
        wait_for(lambda: discovery.find(db) is not None)
        yield db, port, proc
    finally:
        proc.kill()
        proc.communicate()


def test_commands_read_a_running_service_and_writes_are_refused(
    running: tuple[Path, int, subprocess.Popen[str]], home: Path, tmp_path: Path
) -> None:
    """During a run the commands read it, writes are refused in one line; SIGTERM, verify passes."""
    db, port, proc = running
    note = json.loads(discovery.note_path(db).read_text())
    assert note["pid"] == proc.pid and note["url"] == f"http://127.0.0.1:{port}"

    first = _count(db)
    second = wait_for(lambda: (n := _count(db)) > first and n)
    assert second > first

    report = cli("report", "--duckdb-path", str(db))
    assert report.returncode == 0, report.stderr
    assert "orders_aggregated (duckdb): one row per month" in report.stdout
    assert re.search(r"│ \d{4}-\d{2} │", report.stdout), report.stdout
    tasks = cli("tasks", "--duckdb-path", str(db))
    assert tasks.returncode == 0, tasks.stderr
    assert re.search(r"\d+ runs: \d+ SUCCEEDED", tasks.stdout), tasks.stdout

    # What `verify` checks is what is committed, read in one snapshot while the run writes.
    during = cli("verify", "--duckdb-path", str(db))
    assert during.returncode == 0, during.stdout + during.stderr
    assert during.stdout.count(" ok ") == 4, during.stdout

    copied, attached = tmp_path / "copy.csv", tmp_path / "other.duckdb"
    refused = {
        "DELETE FROM raw_orders": "got DELETE",
        "DROP TABLE raw_orders": "got DROP",
        "CREATE TABLE stolen AS SELECT * FROM raw_orders": "got CREATE",
        f"COPY raw_orders TO '{copied}'": "got COPY",
        f"ATTACH '{attached}' AS other": "got ATTACH",
        "INSTALL httpfs": "got INSTALL",
        "LOAD httpfs": "got LOAD",
        "SELECT * FROM read_csv('/etc/passwd')": "file system operations are disabled",
        "SELECT * FROM '/etc/passwd'": "does not exist",
        "SELECT 1; DELETE FROM raw_orders": "exactly one statement",
    }
    with ThreadPoolExecutor(4) as pool:  # each is a process of its own; they may overlap
        answers = list(pool.map(lambda sql: cli("query", sql, "--duckdb-path", str(db)), refused))
    for (sql, why), done in zip(refused.items(), answers, strict=True):
        if why == "does not exist":  # not a file read at all: an unknown table (exit 1)
            assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
        else:
            assert why in _one_line_refusal(done), (sql, done.stderr)
    assert not copied.exists() and not attached.exists()
    assert not (home / ".duckdb").exists(), "an extension was installed"
    tables = cli(
        "query", "SELECT table_name FROM information_schema.tables", "--duckdb-path", str(db)
    )
    assert tables.returncode == 0 and "raw_orders" in tables.stdout
    assert "stolen" not in tables.stdout and "other" not in tables.stdout
    assert _count(db) >= second, "rows were deleted"

    # The limits: a row cap (said so), and a time limit that interrupts the statement.
    many = cli("query", "SELECT * FROM raw_orders", "--duckdb-path", str(db))
    assert many.returncode == 0 and "first 1,000 rows (add a LIMIT)" in many.stdout
    slow = cli("query", "SELECT count(*) FROM range(100000000000)", "--duckdb-path", str(db))
    assert slow.returncode == 1, slow.stderr
    assert slow.stderr == (
        "ecomm-cdc: error: query: stopped after its time limit of 2 s (CDC_QUERY_TIMEOUT)\n"
    )
    assert applied(port) > 0 and get(port, "/healthz")[0] == 200

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not discovery.note_path(db).exists(), "the note outlived the service"
    after = cli("verify", "--duckdb-path", str(db))
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.count(" ok ") == 4, after.stdout


def test_output_through_the_service_is_the_offline_output(tmp_path: Path) -> None:
    """report, tasks and typed queries print the same through a running service as from the file,
    as tables, CSV and JSON alike."""
    db = tmp_path / "same.duckdb"
    done = cli(
        "run", "--events", "30000", "--seed", "7", "--start", START, "--duckdb-path", str(db)
    )
    assert done.returncode == 0, done.stderr
    port = free_port()
    # One event a second, and no refresh while it runs: the layers and the task history stand
    # still (the run rebuilt the layers when it started), so the two readings must agree.
    proc = spawn(
        "run", "--duckdb-path", str(db), "--rate", "1",
        env={"CDC_HTTP_PORT": str(port), "CDC_REFRESH_INTERVAL": "3600"},
    )  # fmt: skip
    commands = [
        ("report",),
        ("tasks",),
        ("query", "SELECT * FROM orders_aggregated ORDER BY order_year, order_month"),
        ("query", "SELECT * FROM cdc_task_history ORDER BY scheduled_time"),
        ("query", "SELECT 1::HUGEINT << 100 AS big, 1.5::DOUBLE AS f, DATE '2026-01-02' AS d, "
                  "INTERVAL 90 MINUTE AS i, 'x'::BLOB AS b, [1, 2] AS l, {'a': 1} AS s, NULL AS n"),
        ("report", "--format", "csv"),
        ("tasks", "--format", "json"),
        ("query", "--format", "json", "SELECT CAST('123456789012345678901234567890' AS "
                  "NUMBER(38, 0)) AS big, 12.30::NUMBER(10, 2) AS money, *, [1, 2] AS l "
                  "FROM TABLE(INFORMATION_SCHEMA.TASK_HISTORY(TASK_NAME => 'refresh_orders_agg'))"),
    ]  # fmt: skip
    try:
        wait_for(lambda: discovery.find(db) is not None)
        live = [cli(*c, "--duckdb-path", str(db)) for c in commands]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    offline = [cli(*c, "--duckdb-path", str(db)) for c in commands]
    for c, a, b in zip(commands, live, offline, strict=True):
        assert a.returncode == b.returncode == 0, (c, a.stderr, b.stderr)
        assert a.stdout == b.stdout, c
    assert json.loads(live[-1].stdout)[0]["NAME"] == "REFRESH_ORDERS_AGG"


HOLD = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1])
print("holding", flush=True)
time.sleep(60)
"""


def test_a_file_held_by_another_program_is_one_line(db: Path) -> None:
    """Locked by something that is not the service (no note): exit 1, one line saying so."""
    duckdb.connect(str(db)).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(db)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        done = cli("report", "--duckdb-path", str(db))
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "is in use by another process" in done.stderr
    assert "no running ecomm-cdc service is recorded beside it" in done.stderr


def test_a_stale_note_is_ignored(db: Path) -> None:
    """A note left by a service that died (kill -9) does not stop a command reading the file."""
    done = cli("run", "--events", "2000", "--seed", "7", "--start", START, "--duckdb-path", str(db))
    assert done.returncode == 0, done.stderr
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)  # fmt: skip
    note = {"pid": int(dead.stdout), "host": os.uname().nodename, "url": "http://127.0.0.1:9",
            "started_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    discovery.note_path(db).write_text(json.dumps(note))
    assert discovery.find(db) is None
    shown = cli("report", "--duckdb-path", str(db))
    assert shown.returncode == 0, shown.stderr
    assert "one row per month" in shown.stdout


def test_the_query_api_can_be_turned_off(tmp_path: Path) -> None:
    """CDC_QUERY_API=false: `query` during a run is refused (exit 2, one line); report still works
    (and, before the first refresh, says the service will fill the layer)."""
    db, port = tmp_path / "off.duckdb", free_port()
    proc = spawn(
        "run", "--seed", "7", "--start", START, "--duckdb-path", str(db), "--rate", "500",
        env={"CDC_HTTP_PORT": str(port), "CDC_QUERY_API": "false"},
    )  # fmt: skip
    try:
        wait_for(lambda: discovery.find(db) is not None)
        done = cli("query", "SELECT 1", "--duckdb-path", str(db))
        shown = cli("report", "--duckdb-path", str(db))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "ecomm-cdc: error: query: the running service has its query API off (CDC_QUERY_API=false)\n"
    )
    assert shown.returncode == 0, shown.stderr
    # A new file, the first refresh 120 s away: the layer is empty, and the hint is not to
    # run `refresh` (it would wait for the file until the service ends).
    assert "orders_aggregated is empty: the running service fills it" in shown.stdout, shown.stdout


def test_the_dashboard_reads_the_warehouse_at_the_refresh_cadence_on_the_emulator() -> None:
    """On the emulator `/` is served and orders_aggregated is read per refresh, not per view."""
    port = free_port()
    proc = spawn(
        "run", "--target", "emulator", "--seed", "7", "--start", START, "--rate", "500",
        env={"CDC_HTTP_PORT": str(port), "CDC_REFRESH_INTERVAL": "6"},
    )  # fmt: skip
    try:

        def months() -> int:
            try:
                status, body = get(port, "/api/warehouse")
            except OSError:
                return 0  # not listening yet
            found = json.loads(body)["aggregated"] if status == 200 else None
            return len(found["rows"]) if found else 0

        wait_for(months, timeout=60)
        assert get(port, "/")[0] == 200
        seen = set()
        for _ in range(30):  # page views, far more often than the refresh cadence
            view = json.loads(get(port, "/api/warehouse")[1])
            assert view["target"] == "emulator" and view["error"] is None
            seen.add(view["read_at"])
        assert len(seen) <= 2, seen  # one read, or two if a refresh fell in between
        live = json.loads(get(port, "/api/live")[1])
        assert live["target"] == "emulator"
        # The rows the refresh read may be committed on the server before the commit's reply
        # reaches the writer that counts them (CI, under load: applied_total 0 just then).
        wait_for(lambda: json.loads(get(port, "/api/live")[1])["applied_total"] > 0, timeout=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "watch.discoverable" not in out, "a note, but there is no DuckDB file to lock"
