"""Killed with SIGKILL partway, the same command again ends in the identical table."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

from service.pipeline.generator import replay

from .conftest import START, identity, spawn
from .helpers import duckdb_checkpoints, duckdb_rows

N = 120_000


def start(db: Path) -> subprocess.Popen[str]:
    return spawn(
        "run", "--events", str(N), "--seed", "7", "--start", START, "--duckdb-path", str(db),
        "--rate", "40000", "--batch-size", "2000", "--flush-interval", "0.1",
        env={"CDC_HTTP_PORT": "0", "CDC_LOG_LEVEL": "debug"},
    )  # fmt: skip


def kill_after_commits(proc: subprocess.Popen[str], commits: int) -> int:
    """Read the log until ``commits`` batches committed, then SIGKILL; returns commits seen."""
    assert proc.stdout is not None
    seen = 0
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if '"sink.batch_committed"' in line:
            seen += 1
            if seen >= commits:
                break
        assert time.monotonic() < deadline, "no progress"
    time.sleep(random.uniform(0, 0.05))  # land anywhere, also inside a transaction
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    return seen


def test_sigkill_twice_then_resume_gives_the_identical_table(tmp_path: Path) -> None:
    """Two SIGKILLs at different points; the final table equals the replay: no duplicates, no gaps."""
    db = tmp_path / "k.duckdb"
    for commits in (random.randint(3, 12), random.randint(20, 40)):
        proc = start(db)
        kill_after_commits(proc, commits)
        assert proc.returncode == -signal.SIGKILL
        ckpts = duckdb_checkpoints(db)
        # The kill landed mid-stream: some partitions have progress, none has all of it.
        assert ckpts and max(ckpts.values()) < N
    proc = start(db)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    summary = next(json.loads(x) for x in out.splitlines() if '"pipeline.summary"' in x)
    assert summary["skipped"] > 0, "the last run resumed rather than starting over"
    assert summary["skipped"] + summary["applied_total"] == N
    assert duckdb_rows(db) == replay(identity(), N)
    assert max(duckdb_checkpoints(db).values()) == N
