"""The surface every target implements: a few blocking calls, run off the event loop.

A sink is opened once; each worker then gets its own :class:`Writer`, which is
created and used on that worker's own thread (a driver connection is not shared
between threads). ``apply`` is one transaction: the rows and the checkpoints of
the batch's partitions commit together, or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..events import Batch


class SinkError(Exception):
    """A failure the service cannot retry its way out of (exit 1, one log line)."""


class TargetConfigError(SinkError):
    """The target cannot be used as configured (a bad path, a missing key file): exit 2.

    ``setting`` names the flag or variable to blame.
    """

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.message = message


@dataclass(frozen=True, slots=True)
class StoredStream:
    """What a target holds for one shard: the stream's identity and its checkpoints."""

    identity: str | None  # JSON, as written by ``StreamIdentity.as_dict``
    checkpoints: dict[int, int]

    @property
    def applied_to(self) -> int:
        """The highest sequence number any partition has applied."""
        return max(self.checkpoints.values(), default=0)


class Writer(Protocol):
    #: Transient failures this writer retried its way through (a counter the consumer reads).
    retries: int

    def apply(self, batch: Batch) -> None:
        """Apply the batch and its checkpoints in one transaction."""

    def close(self) -> None: ...


class Sink(Protocol):
    name: str
    shard: str
    #: The SQL dialect of ``connect_sql`` connections: "duckdb" or "snowflake".
    dialect: str
    #: True where dynamic tables and tasks are not real (DuckDB, the emulator):
    #: the service materialises the warehouse layers and schedules the refresh itself.
    local_warehouse: bool
    #: Names from configuration, validated: "warehouse", "database", "schema" (where they apply).
    names: dict[str, str]

    def open(self) -> None:
        """Connect and create what is missing (idempotent)."""

    def load_stream(self) -> StoredStream:
        """The identity and checkpoints of the sink's shard."""

    def save_stream(self, identity: str, reset: bool) -> None:
        """Record the stream the shard writes; with ``reset``, first drop its rows and checkpoints."""

    def writer(self, worker: int) -> Writer:
        """A writer for one worker; called on the thread that will use it."""

    def connect_sql(self) -> Any:
        """A new DB-API connection for ad-hoc SQL (init, refresh, report, query, verify).

        Valid after ``open``; the caller closes it.
        """

    def close(self) -> None: ...
