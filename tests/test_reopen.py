"""The DuckDB sink closes and reopens its database every CDC_DUCKDB_REOPEN_EVENTS events, between
batches: what DuckDB keeps of an open database's deletes goes back, nothing is lost or doubled."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from service.pipeline.generator import replay
from service.sinks.duckdb import DuckDBSink
from service.watch import memory

from .conftest import START, cli, identity
from .helpers import duckdb_rows
from .test_lifecycle import free_port


def test_reopened_every_20000_events_beside_refreshes_and_reads_the_table_is_the_replay(
    tmp_path: Path,
) -> None:
    """Four writers, a refresh every half second and the dashboard's reads (HTTP on): the
    database is reopened many times, some reopens wait for a refresh and try again, and the
    table ends as the replay of the stream, every refresh SUCCEEDED."""
    db = tmp_path / "t.duckdb"
    done = cli(
        "run", "--events", "200000", "--seed", "7", "--start", START, "--duckdb-path", str(db),
        "--no-progress", "--batch-size", "1000",
        env={"CDC_DUCKDB_REOPEN_EVENTS": "20000", "CDC_REFRESH_INTERVAL": "0.5",
             "CDC_HTTP_PORT": str(free_port()), "CDC_LOG_LEVEL": "debug"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr + done.stdout[-2000:]
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    reopened = [r for r in records if r.get("event") == "sink.reopened"]
    assert len(reopened) >= 4, len(reopened)
    assert all(r["events_since_open"] >= 20_000 for r in reopened)
    refreshes = [r for r in records if r.get("event") == "warehouse.refresh"]
    assert refreshes and {r["state"] for r in refreshes} == {"SUCCEEDED"}
    assert "Traceback" not in done.stdout + done.stderr
    assert duckdb_rows(db) == replay(identity(), 200_000)
    assert cli("verify", "--duckdb-path", str(db)).returncode == 0


def test_a_reopen_gives_back_what_the_deletes_kept(tmp_path: Path) -> None:
    """3,000 transactions each deleting and inserting 1,000 rows hold glibc heap that no
    CHECKPOINT frees; a reopen gives it back, and the rows are all there."""
    sink = DuckDBSink(tmp_path / "t.duckdb", reopen_events=0)
    sink.open()
    try:
        cur = sink.cursor()
        cur.execute("CREATE TABLE churn (i BIGINT, s VARCHAR)")
        rows = pa.table({"i": pa.array(range(1000), pa.int64()),
                         "s": pa.array([f"row {i}" for i in range(1000)])})  # fmt: skip
        cur.register("rows", rows)
        start = memory.sample()["heap_in_use_mb"]
        for _ in range(3000):
            cur.execute("BEGIN")
            cur.execute("DELETE FROM churn WHERE i IN (SELECT i FROM rows)")
            cur.execute("INSERT INTO churn SELECT * FROM rows")
            cur.execute("COMMIT")
        cur.execute("FORCE CHECKPOINT")
        held = memory.sample()["heap_in_use_mb"]
        assert held - start >= 8, (start, held)
        assert sink.reopen() and sink.generation == 1
        after = memory.sample()["heap_in_use_mb"]
        assert held - after >= 8, (start, held, after)
        count = sink.cursor().execute("SELECT count(*), count(DISTINCT i) FROM churn").fetchone()
        assert count == (1000, 1000)
    finally:
        sink.close()
