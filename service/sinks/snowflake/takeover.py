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
user's; ``SYSTEM$ABORT_TRANSACTION``), before each step of its claim. Nothing they
had not committed is lost: it is ahead of the checkpoint, and the new writer
resumes from the checkpoints. A previous writer that is still alive (a second pod)
finds its batch aborted, and stops at its next step: the claim has fenced it.
"""

from __future__ import annotations

from collections.abc import Collection
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


def free(session: SqlSession, shard: str, mine: Collection[str]) -> list[int]:
    """Abort the open transactions of the shard's other writers' sessions and forget those
    sessions (in the caller's transaction). Returns the transactions aborted."""
    others = checkpoint.others_sessions(session, shard, sorted(mine))
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
