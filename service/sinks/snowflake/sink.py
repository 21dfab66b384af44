"""The Snowflake sink: a control connection for set-up and the stream's state, a writer per worker.

Every remote step goes through the retry policy (:mod:`service.retry`) with
the connector's errors classified once (:mod:`.errors`), under its phase:
sign-in (within the login timeout), the tables, the stream's state, a
worker's connection, each batch, the warehouse layers and refreshes. A
connection that broke is reopened before the next attempt.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import snowflake.connector

from ... import logs
from ...config import Config, ConnectionSpec
from ...pipeline import checkpoint
from ...retry import Observer, Phase, RetryPolicy
from ...warehouse import schema as shapes
from ...warehouse import sqlfiles
from ..base import Claim, Holder, SinkError, SqlSession, StoredStream, Warehouse
from . import errors
from . import sql as q
from .connection import SnowSession, close_quietly, open_connection, retrying, signin_error
from .takeover import free
from .writer import SnowflakeWriter

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

log = logs.get("sink")
T = TypeVar("T")


class SnowflakeSink:
    """Snowflake (or anything that speaks its HTTP API), through the real connector."""

    name = "snowflake"
    warehouse = Warehouse.DYNAMIC
    keep_sessions = True  # a session is a login

    def __init__(
        self,
        config: Config,
        *,
        policy: RetryPolicy | None = None,
        chunk_rows: int = q.MAX_LIST,
        observer: Observer | None = None,
    ) -> None:
        self._config = config
        self.shard = config.settings.shard
        self.names = config.snowflake.names
        self.policy = policy or RetryPolicy(
            timeout=config.settings.retry_timeout, observer=observer
        )
        self.chunk_rows = chunk_rows
        self._spec: ConnectionSpec | None = None
        self._conn: SnowflakeConnection | None = None
        self._claim: Claim | None = None
        self._lock = threading.Lock()
        #: The sessions this process opened to write (see :mod:`.takeover`).
        self._mine: set[str] = set()
        self._lock_mine = threading.Lock()
        self._writer = checkpoint.this_writer()

    # -- set-up ------------------------------------------------------------------

    def make_spec(self) -> ConnectionSpec:
        return self._config.snowflake_spec()

    @property
    def spec(self) -> ConnectionSpec:
        if self._spec is None:
            raise SinkError(f"the {self.name} sink is not open")
        return self._spec

    def open(self) -> None:
        spec = self._spec = self.make_spec()
        self.names = self._config.layer_names(spec)
        # A reset or a cut reply during sign-in is retried; a host that does not answer
        # is given up within the login timeout (SNOWFLAKE_LOGIN_TIMEOUT), retries included.
        signin = dataclasses.replace(
            self.policy, timeout=min(self.policy.timeout, spec.login_timeout)
        )
        last: list[Exception] = []

        def sign_in() -> SnowflakeConnection:
            try:
                return open_connection(spec, autocommit=False, tag="control")
            except Exception as exc:
                last[:] = [exc]
                raise

        try:
            self._conn = retrying(signin, sign_in, "signing in", Phase.SIGNIN)
        except SinkError as exc:
            # Say it as a sign-in failure: refused (and why), or not reachable in time.
            raise signin_error(spec, last[0] if last else exc) from None
        log.info(
            "sink.connected",
            target=self.name,
            where=spec.where,
            account=spec.account,
            user=spec.user,
            database=spec.database,
            schema=spec.schema,
            warehouse=spec.warehouse,
            auth="key-pair" if spec.private_key else "password",
        )
        self._control(self._prepare, "cannot create the tables", Phase.SCHEMA)

    def _prepare(self, session: SnowSession) -> None:
        db, schema = self.spec.database, self.spec.schema
        try:
            session.execute(f"USE SCHEMA {db}.{schema}")
        except snowflake.connector.errors.ProgrammingError:
            for sql in q.use_schema(db, schema):  # first run on a fresh account
                session.execute(sql)
        # Tables of our names that another program made are refused before anything changes.
        shapes.check(session, f"{db}.{schema}", "SNOWFLAKE_SCHEMA")
        for sql in sqlfiles.statements(sqlfiles.TABLE_FILES, self.names, dialect="snowflake"):
            session.execute(sql)

    def register(self, conn: SnowflakeConnection, role: str) -> None:
        """Record a session that will write, and commit it, before it writes anything (a
        writer that takes the shard over ends what such a session left open: :mod:`.takeover`).
        """
        session_id = conn.session_id
        if session_id is None:  # a server that names no session: nothing to end later
            return
        with self._lock_mine:
            if str(session_id) in self._mine:
                return
        checkpoint.register_session(
            SnowSession(conn, autocommit=False), self.shard, str(session_id), self._writer, role
        )
        conn.commit()
        with self._lock_mine:
            self._mine.add(str(session_id))

    def _free(self, session: SnowSession, roles: Sequence[str] = checkpoint.ROLES) -> None:
        with self._lock_mine:
            mine = set(self._mine)
        free(session, self.shard, mine, roles)

    def _control(self, fn: Callable[[SnowSession], T], doing: str, phase: Phase) -> T:
        """``fn(session)`` as one transaction on the control connection, reopened if it broke."""

        def once() -> T:
            with self._lock:
                if self._conn is None:
                    self._conn = open_connection(self.spec, autocommit=False, tag="control")
                conn = self._conn
                try:
                    result = fn(SnowSession(conn, autocommit=False))
                    conn.commit()
                    return result
                except Exception as exc:
                    if errors.session_gone(exc):
                        close_quietly(conn)
                        self._conn = None
                    else:
                        try:
                            conn.rollback()
                        except Exception as again:
                            log.debug("sink.rollback_failed", error=errors.describe(again))
                    raise

        return retrying(self.policy, once, doing, phase)

    # -- the stream ----------------------------------------------------------------

    def load_stream(self) -> StoredStream:
        return self._control(
            lambda session: checkpoint.load(session, self.shard),
            "cannot read the stored stream",
            Phase.STREAM,
        )

    def claim_stream(self, identity: str, partitions: int, reset: bool) -> Claim:
        """The claim of :mod:`service.pipeline.checkpoint`, each step after ending what the
        shard's previous writers left open that would hold it (:mod:`.takeover`): their
        claims before the first step (a reset: everything), the rest once the epoch is up."""
        writer = self._writer

        def record(session: SnowSession) -> tuple[int, Holder | None]:
            self.register(session.conn, "control")  # before this session takes a lock
            self._free(session, checkpoint.ROLES if reset else ("control",))
            return checkpoint.record(session, self.shard, identity, partitions, reset, writer)

        epoch, previous = self._control(record, "cannot record the stream", Phase.STREAM)

        def stamp(session: SnowSession) -> Claim:
            self.register(session.conn, "control")
            self._free(session)  # the epoch is committed: an old batch can no longer commit
            return checkpoint.stamp(session, self.shard, epoch, previous)

        self._claim = self._control(stamp, "cannot take the shard over", Phase.STREAM)
        return self._claim

    # -- workers and ad-hoc SQL ----------------------------------------------------

    def writer(self, worker: int) -> SnowflakeWriter:
        spec, claim = self.spec, self._claim
        if claim is None:
            raise SinkError(f"the {self.name} sink has no claim on its shard: claim_stream first")
        tag = f"worker-{worker}"

        def connect() -> SnowflakeConnection:
            conn = open_connection(spec, autocommit=False, tag=tag)
            try:
                self.register(conn, "worker")
            except BaseException:
                close_quietly(conn)
                raise
            return conn

        conn = retrying(self.policy, connect, f"worker {worker}: cannot connect", Phase.CONNECT)
        return SnowflakeWriter(
            spec,
            claim,
            worker,
            policy=self.policy,
            chunk_rows=self.chunk_rows,
            conn=conn,
            connect=connect,
        )

    def connect_sql(self, timeout: float | None = None) -> SnowSession:
        """A new session (autocommit, UTC, the database and schema selected); ``timeout``
        replaces the session's STATEMENT_TIMEOUT_IN_SECONDS (CDC_STATEMENT_TIMEOUT)."""
        spec = self.spec
        try:
            conn = open_connection(spec, autocommit=True, tag="sql", statement_timeout=timeout)
            return SnowSession(conn, autocommit=True)
        except Exception as exc:
            raise signin_error(spec, exc) from None

    def run(self, fn: Callable[[SqlSession], T], doing: str, phase: Phase) -> T:
        """``fn`` on a new session, closed afterwards; the whole retried as one operation."""
        spec = self.spec

        def once() -> T:
            session = SnowSession(
                open_connection(spec, autocommit=True, tag="sql"), autocommit=True
            )
            try:
                if phase is Phase.STREAM and self._claim is not None:
                    self.register(session.conn, "snapshot")  # it writes the stream's state
                return fn(session)
            finally:
                session.close()

        return retrying(self.policy, once, doing, phase)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                close_quietly(self._conn, rollback=True)
                self._conn = None
