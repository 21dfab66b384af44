"""A writer that takes a shard over ends the transactions its predecessors left open.

A writer killed in the middle of a batch (SIGKILL, an OOM kill, a node lost) cannot
roll back: its session's transaction stays open on Snowflake, "detached", holding its
locks, and Snowflake aborts it only after it has blocked another transaction for 5
idle minutes ("Transactions": aborting transactions). Every restart after a crash
would wait that long, up to LOCK_TIMEOUT per statement.

So every session a writer opens to write is recorded first, in a transaction of its
own (``cdc_sessions``: :func:`service.pipeline.checkpoint.register_session`), and a
writer that claims the shard aborts the open transactions of the sessions the
shard's other writers recorded (``SHOW TRANSACTIONS``, which lists the current
user's; ``SYSTEM$ABORT_TRANSACTION``). Nothing they had not committed is lost: it is
ahead of the checkpoint, and the new writer resumes from the checkpoints.

The order matters, because the old writer may be alive (a second pod, a paused
one). After an abort, the aborted session's next statement begins a new transaction
(the emulator plays it so; Snowflake's pages do not say otherwise): a batch aborted
between its INSERTs and its checkpoint UPDATE would commit the checkpoint without the
rows, were the UPDATE's fence not already up. So a claim aborts the workers' (and
snapshots') transactions only after its first step, which raises the shard's writer
epoch, has committed: from then on every checkpoint UPDATE of the old writer changes
nothing, and its batch rolls back. Before that first step it aborts only what the
other writers' *control* sessions left open (a claim of a writer killed in the middle
of it, whose locks would hold this one): a claim cut in two commits no rows and no
checkpoint. (The test: tests/test_takeover.py, a batch held between its INSERTs and its
checkpoint while the next writer claims.) ``--reset`` deletes the shard's rows and
checkpoints in the first step: it aborts everything first, as what it deletes is all
there is.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from ... import logs
from ...pipeline import checkpoint
from ..base import SqlSession

log = logs.get("sink")


def open_transactions(session: SqlSession) -> list[dict[str, Any]]:
    """``SHOW TRANSACTIONS``: the current user's open transactions (id, session, ...)."""
    cur = session.execute("SHOW TRANSACTIONS")
    names = [d[0].lower() for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def free(
    session: SqlSession, shard: str, mine: Collection[str], roles: Sequence[str] = checkpoint.ROLES
) -> list[int]:
    """Abort the open transactions of the shard's other writers' sessions in ``roles`` and
    forget those sessions (in the caller's transaction). Returns the transactions aborted.

    Only once this writer's epoch is committed may a worker's transaction be aborted: see
    the module's docstring."""
    others = checkpoint.others_sessions(session, shard, sorted(mine), roles)
    if not others:
        return []
    aborted = []
    for txn in open_transactions(session):
        if str(txn["session"]) in others:
            session.execute("SELECT SYSTEM$ABORT_TRANSACTION(?)", [int(txn["id"])])
            aborted.append(int(txn["id"]))
    checkpoint.forget_sessions(session, shard, sorted(others))
    if aborted:
        log.warning(
            "sink.takeover_aborted",
            shard=shard,
            transactions=aborted,
            left_by=sorted(set(others.values())),
            because="a previous writer of the shard left them open (its locks would hold this "
            "writer's batches); what they held was not committed and is applied again",
        )
    return aborted
