"""``--target emulator``, persistence, and one broken worker among healthy ones."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest
import snowflake.connector

from service.pipeline.generator import replay

from .conftest import START, cli, identity
from .emulator import ROWS_SQL, Gate, Server


def _lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]


@pytest.mark.timeout(120)
def test_emulator_target_says_where_it_listens_and_serves_other_clients() -> None:
    """--target emulator logs host:port; another connector reads the rows during the run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "SNOWFLAKE_"))}
    env.update(CDC_HTTP_PORT="0", CDC_LOG_FORMAT="json")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service",
            "run",
            "--target",
            "emulator",
            "--duration",
            "7",
            "--rate",
            "150",
            "--batch-size",
            "100",
            "--flush-interval",
            "0.3",
            "--seed",
            "7",
            "--start",
            START,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    stdout = proc.stdout
    assert stdout is not None

    def pump() -> None:
        for ln in stdout:
            lines.put(ln)

    threading.Thread(target=pump, daemon=True).start()
    try:
        listening = None
        while listening is None:
            event = json.loads(lines.get(timeout=60))
            if event["event"] == "emulator.listening":
                listening = event
        assert listening["host"] == "127.0.0.1" and listening["url"].startswith("http://")
        conn = snowflake.connector.connect(
            account="anyone",
            user="person",
            password="x",  # noqa: S106 (any is accepted)
            host=listening["host"],
            port=listening["port"],
            protocol="http",
            database="ECOMM",
            schema="PUBLIC",
            login_timeout=10,
            network_timeout=10,
        )
        seen = 0
        deadline = time.monotonic() + 30
        while seen == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(snowflake.connector.errors.ProgrammingError):  # not yet made
                seen = conn.cursor().execute("SELECT COUNT(*) FROM raw_orders").fetchone()[0]  # type: ignore[union-attr,index]
        conn.close()
        assert seen > 0
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "Traceback" not in (proc.stderr.read() if proc.stderr else "")


def _emulator_rows(path: Path) -> dict[str, tuple[object, ...]]:
    """raw_orders from the emulator's DuckDB file, as comparable rows."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute(ROWS_SQL.replace("FROM raw_orders", "FROM PUBLIC.raw_orders")).fetchall()
    finally:
        con.close()
    epoch = dt.datetime(1970, 1, 1)
    return {
        r[0]: (r[0], r[1], int((r[2] - epoch).total_seconds()), r[3], int(r[4] * 100), r[5], r[6])
        for r in rows
    }


@pytest.mark.timeout(150)
def test_emulator_path_keeps_the_stream_across_runs(tmp_path: Path) -> None:
    """With CDC_EMULATOR_PATH a second run resumes the first; --reset starts afresh."""
    env = {"CDC_EMULATOR_PATH": str(tmp_path / "emu")}
    first = cli(
        "run",
        "--target",
        "emulator",
        "--events",
        "600",
        "--seed",
        "7",
        "--start",
        START,
        env=env,
        timeout=100,
    )
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    second = cli("run", "--target", "emulator", "--events", "1200", env=env, timeout=100)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    started = next(e for e in _lines(second.stdout) if e["event"] == "service.started")
    assert started["resume_from"] > 0 and "seed=7" in started["stream"]
    assert _emulator_rows(tmp_path / "emu" / "ECOMM.db") == replay(identity(7), 1200)
    third = cli(
        "run",
        "--target",
        "emulator",
        "--events",
        "300",
        "--seed",
        "8",
        "--start",
        START,
        "--reset",
        env=env,
        timeout=100,
    )
    assert third.returncode == 0, third.stdout[-2000:] + third.stderr[-2000:]
    assert _emulator_rows(tmp_path / "emu" / "ECOMM.db") == replay(identity(8), 300)


@pytest.mark.timeout(200)
def test_a_broken_worker_does_not_stall_the_others() -> None:
    """One worker's session hangs, then is gone: it reconnects; the others commit meanwhile."""
    gate = Gate(victim_insert=3, stall=6.0)
    with Server(gate) as server:
        proc = cli(
            "run",
            "--target",
            "snowflake",
            "--events",
            "3000",
            "--seed",
            "7",
            "--start",
            START,
            "--workers",
            "3",
            "--batch-size",
            "200",
            env=server.env(),
            timeout=180,
        )
        rows = server.rows() if proc.returncode == 0 else {}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert gate.stalled is not None and gate.victim is not None
    start, end = gate.stalled
    others = [
        r
        for r in gate.statements
        if r.token != gate.victim and r.verb == "COMMIT" and start < r.at < end
    ]
    assert len(others) >= 2, "the other workers stalled with the broken one"
    log = _lines(proc.stdout)
    assert any(e["event"] == "sink.reconnected" for e in log)
    assert rows == replay(identity(7), 3000)


@pytest.mark.timeout(60)
def test_a_statement_whose_values_do_not_fit_is_our_bug_not_a_lost_reply() -> None:
    """A statement sent once (no connector retries) whose placeholders and values do not
    match fails with the connector's TypeError, not as NoReply (a lost reply, retried): a
    bug of ours is terminal. The well-formed statement runs."""
    from service.sinks.snowflake import errors, open_connection
    from service.sinks.snowflake.connection import NoReply, execute
    from service.sinks.snowflake.sql import Statement

    with Server() as server:
        conn = open_connection(server.emulator.spec(), autocommit=True, tag="test")
        try:
            cur = conn.cursor()
            cur.execute("CREATE TABLE t (a INT, b INT)")
            for bad in (
                Statement(
                    "INSERT INTO t (a, b) VALUES (%s, %s)", [[1]], many=True, replayable=False
                ),
                Statement("UPDATE t SET a = %s WHERE b = %s", [1], replayable=False),
                Statement("UPDATE t SET a = %s", [1, 2], replayable=False),
            ):
                with pytest.raises(TypeError) as caught:
                    execute(cur, bad)
                assert not isinstance(caught.value, NoReply)
                assert errors.classify(caught.value) is errors.Kind.TERMINAL
            execute(cur, Statement("INSERT INTO t (a, b) VALUES (%s, %s)", [[1, 2], [3, 4]],
                                   many=True, replayable=False))  # fmt: skip
            execute(cur, Statement("UPDATE t SET a = %s WHERE b = %s", [5, 4], replayable=False))
            cur.execute("SELECT a, b FROM t ORDER BY b")
            assert cur.fetchall() == [(1, 2), (5, 4)]
        finally:
            conn.close()


@pytest.mark.timeout(60)
def test_a_merge_stays_inside_its_transaction() -> None:
    """The batch's MERGE (updates and deletes) is part of its transaction on the emulator: another
    session sees nothing of it before COMMIT, and a ROLLBACK undoes it (fakesnow alone commits
    the open transaction at a MERGE: the account layer runs it as DuckDB's MERGE INTO)."""
    from service.pipeline.events import Event, Op
    from service.sinks.snowflake import open_connection
    from service.sinks.snowflake import sql as q
    from service.sinks.snowflake.connection import SnowSession, execute

    with Server() as server:
        server.query(
            "CREATE TABLE raw_orders (order_id VARCHAR, customer_id VARCHAR, order_date "
            "TIMESTAMP_NTZ, status VARCHAR, amount NUMBER(12, 2), product_id VARCHAR, "
            "quantity INTEGER)"
        )
        server.query(
            "INSERT INTO raw_orders VALUES ('ORD-0-1', 'C', '2026-01-01', 'PENDING', 1, 'P', 1), "
            "('ORD-0-2', 'C', '2026-01-01', 'PENDING', 2, 'P', 2)"
        )
        before = server.query("SELECT * FROM raw_orders ORDER BY 1")
        shipped = Event(9, Op.UPDATE, "ORD-0-1", "C", 0, "SHIPPED", 150, "P", 3)
        writer = open_connection(server.emulator.spec(), autocommit=False, tag="w")
        try:
            for end in ("rollback", "commit"):
                (merge,) = q.merges([shipped], ["ORD-0-2"])
                execute(writer.cursor(), merge)
                assert server.query("SELECT * FROM raw_orders ORDER BY 1") == before
                getattr(writer, end)()
            after = server.query("SELECT order_id, status, amount, quantity FROM raw_orders")
            assert [(r[0], r[1], float(r[2]), r[3]) for r in after] == [
                ("ORD-0-1", "SHIPPED", 1.5, 3)
            ]
            assert SnowSession(writer, autocommit=False).execute("SELECT 1").fetchone() == (1,)
        finally:
            writer.close()
