"""The note beside the DuckDB file: written whole, found while its process lives, removed by it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from service.watch import discovery


def test_a_note_is_written_whole_and_removed_by_its_writer(db: Path) -> None:
    """write() leaves a complete JSON note (no temporary file behind); remove() takes it away."""
    path = discovery.write(db, "http://127.0.0.1:8080")
    assert path == db.with_name("ecomm.duckdb.service.json")
    data = json.loads(path.read_text())
    assert data["pid"] == os.getpid() and data["host"] == socket.gethostname()
    assert data["url"] == "http://127.0.0.1:8080" and data["started_at"].endswith("+00:00")
    assert [p.name for p in db.parent.iterdir()] == [path.name]
    found = discovery.find(db)
    assert found is not None and found.pid == os.getpid()
    discovery.remove(db)
    assert not path.exists() and discovery.find(db) is None


def test_a_note_of_a_dead_process_or_of_another_is_left_alone(db: Path) -> None:
    """A stale note (its pid gone) is not found; remove() never deletes another process's note."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    note = {"pid": int(dead.stdout), "host": socket.gethostname(), "url": "http://127.0.0.1:1",
            "started_at": "2026-01-01T00:00:00+00:00"}  # fmt: skip
    path = discovery.note_path(db)
    path.write_text(json.dumps(note))
    assert discovery.find(db) is None
    discovery.remove(db)
    assert path.exists(), "removed a note that was not this process's"
    path.write_text("{not json")
    assert discovery.find(db) is None


def test_a_wildcard_bind_is_reached_on_the_loopback() -> None:
    """A server bound to every interface is reached at 127.0.0.1 (or [::1])."""
    assert discovery.url_for("0.0.0.0", 8080) == "http://127.0.0.1:8080"  # noqa: S104
    assert discovery.url_for("::", 8080) == "http://[::1]:8080"
    assert discovery.url_for("127.0.0.1", 9) == "http://127.0.0.1:9"
