"""The note a running service leaves beside its DuckDB file, so commands can find it.

DuckDB lets one process open a file. While ``ecomm-cdc run`` holds it, the
service writes ``<file>.service.json``: its pid, host, a URL to reach its HTTP
API and when it started. A command that finds the file locked reads the note
and asks the service instead. The note is written atomically (a temporary file
renamed over it) and removed when the service stops; a note whose process is
gone (a ``kill -9``) is stale and ignored.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import clock

SUFFIX = ".service.json"
#: Addresses that mean "every interface": a client connects to the loopback instead.
_ANY = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 (a mapping, no bind)


@dataclass(frozen=True, slots=True)
class Note:
    pid: int
    host: str
    url: str
    started_at: str  # ISO 8601, UTC

    def describe(self) -> str:
        return f"ecomm-cdc run (pid {self.pid} on {self.host}, {self.url})"


def note_path(db: Path) -> Path:
    return db.with_name(db.name + SUFFIX)


def url_for(host: str, port: int) -> str:
    """A URL a client on this machine can connect to, for a server bound to ``host``."""
    host = _ANY.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def write(db: Path, url: str) -> Path:
    """Record this process as the service of ``db`` (atomically)."""
    started = clock.utc_now().replace(tzinfo=dt.UTC).isoformat(timespec="seconds")
    note = Note(os.getpid(), socket.gethostname(), url, started)
    path = note_path(db)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(asdict(note)) + "\n")
    os.replace(tmp, path)
    return path


def remove(db: Path) -> None:
    """Remove the note, if it is this process's (a newer service may have replaced it)."""
    path = note_path(db)
    found = read(path)
    if found is not None and found.pid == os.getpid() and found.host == socket.gethostname():
        with contextlib.suppress(OSError):
            path.unlink()


def read(path: Path) -> Note | None:
    """The note at ``path``; None when there is none or it is not one."""
    try:
        data = json.loads(path.read_text())
        return Note(int(data["pid"]), str(data["host"]), str(data["url"]), str(data["started_at"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def find(db: Path) -> Note | None:
    """The live service of ``db``: None when there is no note, or its process is gone.

    A note from another host (a shared volume) cannot be checked here; it is
    returned, and the connection to its URL decides.
    """
    found = read(note_path(db))
    if found is None:
        return None
    if found.host == socket.gethostname() and not _alive(found.pid):
        return None
    return found
