"""DuckDB's memory limit: set from configuration, and running out of it is a clean stop."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from service.clock import utc_now
from service.pipeline import checkpoint
from service.pipeline.generator import replay
from service.runner import Service, StageFailed
from service.sinks import duckdb as duckdb_sink
from service.sinks.duckdb import DuckDBSink, memory_limit_mb

from .conftest import START, cli, config, identity
from .helpers import duckdb_checkpoints, duckdb_rows, expected_at_checkpoints


def _limit(path: Path, **kwargs: int) -> str:
    sink = DuckDBSink(path, **kwargs)  # type: ignore[arg-type]
    sink.open()
    try:
        return str(sink.con.execute("SELECT current_setting('memory_limit')").fetchone()[0])  # type: ignore[index]
    finally:
        sink.close()


def test_the_limit_grows_with_the_workers_and_can_be_set(tmp_path: Path) -> None:
    assert memory_limit_mb(4) < memory_limit_mb(16)
    assert _limit(tmp_path / "a.duckdb", workers=16) == _limit(
        tmp_path / "b.duckdb", memory_mb=memory_limit_mb(16)
    )
    assert _limit(tmp_path / "c.duckdb", memory_mb=100) != _limit(
        tmp_path / "d.duckdb", memory_mb=200
    )


def test_running_out_of_memory_stops_cleanly_and_a_rerun_with_more_completes(
    tmp_path: Path,
) -> None:
    """32 workers of tiny batches under 32 MB: exit 1, each failure one line naming the setting; the
    target holds exactly what its checkpoints say; the same command with the default limit
    then ends with the replay."""
    db = tmp_path / "t.duckdb"
    args = ("run", "--events", "60000", "--seed", "7", "--start", START, "--duckdb-path", str(db),
            "--workers", "32", "--batch-size", "64", "--no-progress")  # fmt: skip
    starved = cli(*args, env={"CDC_DUCKDB_MEMORY_MB": "32"})
    assert starved.returncode == 1, starved.stdout[-2000:]
    errors = [json.loads(line) for line in starved.stdout.splitlines()
              if line.startswith("{") and '"level": "error"' in line]  # fmt: skip
    # One line per worker that ran out (several may at once), each naming the setting.
    assert errors, starved.stdout[-2000:]
    for error in errors:
        assert "out of its 32 MB memory limit (CDC_DUCKDB_MEMORY_MB" in error["error"], error
    assert "Traceback" not in starved.stdout + starved.stderr
    assert duckdb_rows(db) == expected_at_checkpoints(identity(), duckdb_checkpoints(db))
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert duckdb_rows(db) == replay(identity(), 60_000)


def test_a_commit_that_fails_but_leaves_its_checkpoint_is_applied_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB 2.0.1, out of memory at COMMIT ("Failed to commit: failed to pin block"), can
    raise and still put the batch's checkpoint UPDATE in the file without its rows. Injected
    here: one batch writes its checkpoints alone, commits, and its COMMIT raises. The run
    fails, and the file still holds exactly what its checkpoints say; a rerun completes."""
    db = tmp_path / "t.duckdb"
    original_write, original_commit = duckdb_sink._write, duckdb_sink.DuckSession.commit
    # The session whose batch was cut: its own COMMIT raises (another worker's may come first).
    state: dict[str, Any] = {"writes": 0, "fail": None}

    def write(session: Any, claim: Any, batch: Any, table: Any, *, again: bool = False) -> None:
        state["writes"] += 1
        if again or state["writes"] != 7:
            original_write(session, claim, batch, table, again=again)
            return
        sql, params = checkpoint.advance(claim.shard, claim.epoch, batch.checkpoints, utc_now())
        session.changed(sql, params)  # the rows are lost, the checkpoint is not
        state["fail"] = session

    def commit(self: duckdb_sink.DuckSession) -> None:
        original_commit(self)
        if state["fail"] is self:
            state["fail"] = None
            raise duckdb.TransactionException("Failed to commit: failed to pin block (injected)")

    monkeypatch.setattr(duckdb_sink, "_write", write)
    monkeypatch.setattr(duckdb_sink.DuckSession, "commit", commit)
    flags: dict[str, Any] = {
        "events": 4000,
        "duckdb_path": db,
        "workers": 2,
        "batch_size": 200,
        "progress": False,
    }
    with pytest.raises(StageFailed):
        asyncio.run(Service(config(**flags)).run())
    assert state["writes"] >= 7
    checkpoints = duckdb_checkpoints(db)
    assert 0 < max(checkpoints.values()) < 4000
    assert duckdb_rows(db) == expected_at_checkpoints(identity(), checkpoints)
    monkeypatch.undo()
    asyncio.run(Service(config(**flags)).run())
    assert duckdb_rows(db) == replay(identity(), 4000)
