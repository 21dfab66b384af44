"""DuckDB's memory limit: set from configuration, and running out of it is a clean stop."""

from __future__ import annotations

import json
from pathlib import Path

from service.pipeline.generator import replay
from service.sinks.duckdb import DuckDBSink, memory_limit_mb

from .conftest import START, cli, identity
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
