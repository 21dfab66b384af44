"""The Snowflake path end to end: the CLI, the real connector, a fakesnow server over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from service.pipeline.generator import replay
from service.runner import Service
from service.sinks.emulator import EmulatorSink
from service.sinks.snowflake.sql import MAX_LIST

from .conftest import START, cli, config, identity
from .emulator import BatchSeen, Gate, Server, batches_seen, check_bulk
from .helpers import duckdb_rows

EVENTS = 20_000


def _log(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@dataclass
class Run:
    rows: dict[str, tuple[object, ...]]
    seen: list[BatchSeen]
    log: list[dict[str, Any]]
    code: int
    stderr: str


@pytest.fixture(scope="module")
def snowflake_run() -> Iterator[Run]:
    """20,000 events of seed 7 through ``ecomm-cdc run`` (no --target: credentials pick snowflake)."""
    with Server(Gate()) as server:
        proc = cli(
            "run",
            "--events",
            str(EVENTS),
            "--seed",
            "7",
            "--start",
            START,
            env=server.env(),
            timeout=400,
        )
        rows = server.rows() if proc.returncode == 0 else {}
        yield Run(
            rows,
            batches_seen(server.gate.statements),
            _log(proc.stdout),
            proc.returncode,
            proc.stderr,
        )


def test_snowflake_target_matches_replay_and_duckdb(snowflake_run: Run, tmp_path: Path) -> None:
    """raw_orders on the emulator == the in-memory replay == the DuckDB target, same stream."""
    assert snowflake_run.code == 0, snowflake_run.stderr[-2000:]
    started = next(e for e in snowflake_run.log if e["event"] == "service.started")
    assert started["target"] == "snowflake"
    expected = replay(identity(7), EVENTS)
    assert len(expected) > 5_000
    assert snowflake_run.rows == expected
    db = tmp_path / "same.duckdb"
    proc = cli(
        "run",
        "--target",
        "duckdb",
        "--duckdb-path",
        str(db),
        "--events",
        str(EVENTS),
        "--seed",
        "7",
        "--start",
        START,
    )
    assert proc.returncode == 0, proc.stderr
    assert duckdb_rows(db) == snowflake_run.rows


def test_statements_reaching_the_server_are_bulk(snowflake_run: Run) -> None:
    """Per batch the server sees INSERTs <= ceil(rows/16,384), one MERGE (updates and deletes)
    per chunk."""
    seen = snowflake_run.seen
    summary = next(e for e in snowflake_run.log if e["event"] == "pipeline.summary")
    assert len(seen) == summary["batches"]
    assert list(check_bulk(seen, MAX_LIST)) == []
    assert all(len(b.insert_rows) == 1 for b in seen)
    assert all(len(b.merge_rows) <= 1 for b in seen)
    inserted = sum(sum(b.insert_rows) for b in seen)
    deleted = sum(sum(b.delete_ids) for b in seen)
    assert inserted - deleted == len(snowflake_run.rows)  # the counts are of real rows
    assert max(b.round_trips for b in seen) <= 4  # INSERT, MERGE, checkpoint UPDATE, COMMIT


def test_chunks_split_statements_but_stay_bulk() -> None:
    """With 150-row chunks, each statement carries a full chunk: never one per event."""
    with Server(Gate()) as server:
        cfg = config(target="emulator", events=3_000, workers=2, batch_size=1_500)
        sink = EmulatorSink(cfg, chunk_rows=150, server=server.emulator)
        stats = asyncio.run(Service(cfg, sink=sink).run())
        rows = server.rows()
        seen = batches_seen(server.gate.statements)
    assert rows == replay(identity(7), 3_000)
    assert len(seen) == stats.batches
    assert list(check_bulk(seen, 150)) == []
    inserts = [n for b in seen for n in b.insert_rows]
    assert len(inserts) > len(seen)  # chunking really happened
    assert all(n == 150 for b in seen for n in b.insert_rows[:-1])
    for b in seen:
        assert len(b.insert_rows) == math.ceil(sum(b.insert_rows) / 150)
