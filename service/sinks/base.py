"""The surface every target implements: a few blocking calls, run off the event loop.

A sink is opened once; each worker then gets its own :class:`Writer`, which is
created and used on that worker's own thread (a driver connection is not shared
between threads). ``apply`` is one transaction: the rows and the checkpoints of
the batch's partitions commit together, or not at all.

Ad-hoc SQL (the warehouse layers, the task history, ``query``, ``verify``) goes
through a :class:`SqlSession`: one connection's session, with ``?``
placeholders whatever the driver binds, and :func:`transaction` around it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

from ..config import Names
from ..pipeline.events import Batch

if TYPE_CHECKING:
    from ..retry import Phase

T = TypeVar("T")

Dialect = Literal["duckdb", "snowflake"]


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


class Fenced(SinkError):
    """Another process took this shard over (newest wins): this one stops, exit 1."""


class Warehouse(enum.Enum):
    """Who keeps ``orders_derived`` and ``orders_aggregated`` fresh on a target."""

    #: Snowflake: dynamic tables, refreshed by the task of ``sql/``.
    DYNAMIC = "dynamic"
    #: DuckDB and the emulator: no dynamic tables or tasks; the service
    #: materialises the layers and plays the task itself.
    LOCAL = "local"
    #: The null target holds no data.
    NONE = "none"


@dataclass(frozen=True, slots=True)
class StoredStream:
    """What a target holds for one shard: the stream's identity and its checkpoints."""

    identity: str | None  # JSON, as written by ``StreamIdentity.as_dict``
    checkpoints: dict[int, int]

    @property
    def applied_to(self) -> int:
        """The highest sequence number any partition has applied."""
        return max(self.checkpoints.values(), default=0)


@dataclass(frozen=True, slots=True)
class Holder:
    """Who writes a shard: its epoch, ``host pid N``, and since when (UTC)."""

    epoch: int
    writer: str | None
    since: dt.datetime | None

    def describe(self) -> str:
        since = f" since {self.since:%Y-%m-%d %H:%M:%S} UTC" if self.since else ""
        return f"{self.writer or 'an earlier version'}{since} (writer epoch {self.epoch})"


@dataclass(frozen=True, slots=True)
class Claim:
    """What a run starts from: its lease on the shard, and the checkpoints after taking it."""

    shard: str
    epoch: int
    checkpoints: dict[int, int]
    previous: Holder | None  # who wrote the shard before (None: a new stream)


class Result(Protocol):
    """What a statement returns (a DB-API cursor, or DuckDB's connection)."""

    @property
    def description(self) -> Any: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchmany(self, size: int) -> list[Any]: ...


class SqlSession(Protocol):
    """One database session. Statements use ``?`` placeholders on every driver."""

    dialect: Dialect

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        """Run one statement in this session (inside its open transaction, if any)."""

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one INSERT, UPDATE or DELETE; returns the rows it changed."""

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


@contextlib.contextmanager
def transaction(session: SqlSession) -> Iterator[SqlSession]:
    """Commit what the block did, or roll it back (and re-raise) if it raised."""
    session.begin()
    try:
        yield session
    except BaseException:
        # If the transaction is already gone, the error being raised says why.
        with contextlib.suppress(Exception):
            session.rollback()
        raise
    session.commit()


class Writer(Protocol):
    #: Transient failures this writer retried its way through (a counter the consumer reads).
    retries: int

    def apply(self, batch: Batch) -> None:
        """Apply the batch and its checkpoints in one transaction."""

    def close(self) -> None: ...


class Sink(Protocol):
    name: str
    shard: str
    warehouse: Warehouse
    #: The names rendered into ``sql/`` (validated identifiers).
    names: Names
    #: Whether a reader keeps its SQL session between reads: yes where opening one costs (a
    #: login); no where an open one is in the way (the DuckDB sink reopens its database only
    #: while no session holds it: ``CDC_DUCKDB_REOPEN_EVENTS``).
    keep_sessions: bool

    def open(self) -> None:
        """Connect and create what is missing (idempotent)."""

    def load_stream(self) -> StoredStream:
        """The identity and checkpoints of the sink's shard."""

    def claim_stream(self, identity: str, partitions: int, reset: bool) -> Claim:
        """Record the stream the shard writes (with ``reset``, first drop its rows and
        checkpoints), take the shard over, and read its checkpoints: one transaction.

        Writers created afterwards hold this claim; a later claim by another
        process fences them (see :mod:`service.pipeline.checkpoint`).
        """

    def writer(self, worker: int) -> Writer:
        """A writer for one worker; called on the thread that will use it."""

    def connect_sql(self, timeout: float | None = None) -> SqlSession:
        """A new session for ad-hoc SQL (init, refresh, report, query, verify).

        Valid after ``open``; the caller closes it. ``timeout``: where the target bounds a
        session's statements itself (Snowflake: STATEMENT_TIMEOUT_IN_SECONDS), each ends
        after that many seconds (the reads through the running service); elsewhere the
        caller bounds them.
        """

    def run(self, fn: Callable[[SqlSession], T], doing: str, phase: Phase) -> T:
        """``fn`` on a new session (closed afterwards), retried as one operation where the
        target is remote: the warehouse layers, a refresh."""

    def close(self) -> None: ...
