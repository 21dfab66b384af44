"""One worker's batches on Snowflake: one connection, one transaction per batch.

A batch is one transaction on the worker's own connection (autocommit off, so
there is no BEGIN round trip): the inserts as ``executemany`` (which the
connector sends as one multi-row INSERT per chunk), the updates as one
``UPDATE ... FROM (VALUES ...)`` per chunk, the deletes as one ``DELETE ... IN``
per chunk, the checkpoints as one UPDATE (a compare-and-set on this writer's
epoch, :mod:`service.pipeline.checkpoint`), then COMMIT. Every one of them stays inside
the transaction, on Snowflake and on the emulator alike.

After an error the outcome is not known: the connector retries a request whose
reply was lost, and a timed-out request may still commit on the server. So the
writer never guesses: it rolls back what may be open, reads back the
checkpoint of one of the batch's partitions (written in the same transaction,
so all of them commit together), and re-applies the batch only if it is not
there. Real Snowflake does not enforce the primary key, so the INSERT is never
re-sent by the connector (see :func:`~.connection.execute`); UPDATE and DELETE
write after-images and may be.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ... import clock, logs
from ...config import ConnectionSpec
from ...pipeline import checkpoint
from ...pipeline.events import Batch
from ...retry import Phase, RetryPolicy
from ..base import Claim
from . import errors
from . import sql as q
from .connection import SnowSession, close_quietly, execute, open_connection, retrying

if TYPE_CHECKING:
    from snowflake.connector import SnowflakeConnection

log = logs.get("sink")


class SnowflakeWriter:
    """One worker's connection and its batches. Created and used on the worker's thread."""

    def __init__(
        self,
        spec: ConnectionSpec,
        claim: Claim,
        worker: int,
        *,
        policy: RetryPolicy,
        chunk_rows: int,
        conn: SnowflakeConnection,
        connect: Callable[[], SnowflakeConnection] | None = None,
    ) -> None:
        self._spec = spec
        self._claim = claim
        self._worker = worker
        self._policy = policy
        self._chunk_rows = chunk_rows
        self._conn: SnowflakeConnection | None = conn
        # A new connection (recorded as the shard's, as the first one was: see .takeover).
        self._connect = connect or (
            lambda: open_connection(spec, autocommit=False, tag=f"worker-{worker}")
        )
        # The current batch may have been (partly) sent: its outcome must be read back.
        self._unsure = False
        self.reconnects = 0
        self.retries = 0

    def apply(self, batch: Batch) -> None:
        attempts = 0

        def once() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.retries += 1  # the run's summary counts these (the metric: the retry policy's)
            self._apply_once(batch)

        retrying(
            self._policy,
            once,
            f"worker {self._worker}: batch up to seq {batch.last_seq} not applied "
            "(it stays ahead of the checkpoint)",
            Phase.APPLY,
        )

    def _apply_once(self, batch: Batch) -> None:
        claim = self._claim
        try:
            conn = self._conn or self._reconnect()
            session = SnowSession(conn, autocommit=False)
            if self._unsure:
                conn.rollback()
                if checkpoint.committed(session, claim.shard, claim.epoch, batch.checkpoints):
                    self._unsure = False
                    log.info(
                        "sink.batch_resolved",
                        worker=self._worker,
                        outcome="committed",
                        last_seq=batch.last_seq,
                    )
                    return
                log.info(
                    "sink.batch_resolved",
                    worker=self._worker,
                    outcome="not committed",
                    last_seq=batch.last_seq,
                )
            # Built before anything is sent: a bug of ours here is not a lost reply.
            statements = q.plan(batch, claim, clock.utc_now(), self._chunk_rows)
            self._unsure = True
            cur = conn.cursor()
            for st in statements:
                execute(cur, st)
            # The last statement is the checkpoint's compare-and-set.
            checkpoint.advanced(
                session, claim.shard, claim.epoch, int(cur.rowcount or 0), len(batch.checkpoints)
            )
            conn.commit()
            self._unsure = False
        except Exception as exc:
            transient = errors.is_transient(exc)
            log.warning(
                "sink.batch_failed",
                worker=self._worker,
                transient=transient,
                error=errors.describe(exc),
                last_seq=batch.last_seq,
            )
            if errors.session_gone(exc):
                self._drop(rollback=False)  # nothing to say to a session that is gone
            elif not transient:
                self._drop(rollback=True)  # stopping: end the transaction now, not at expiry
            raise

    def _reconnect(self) -> SnowflakeConnection:
        self._conn = self._connect()
        self.reconnects += 1
        log.info("sink.reconnected", worker=self._worker, reconnects=self.reconnects)
        return self._conn

    def _drop(self, *, rollback: bool) -> None:
        """Close the connection (the next attempt reopens it)."""
        if self._conn is not None:
            close_quietly(self._conn, rollback=rollback)
            self._conn = None

    def close(self) -> None:
        self._drop(rollback=True)
