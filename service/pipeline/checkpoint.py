"""Which stream a run continues, where each partition resumes, and who may write it.

A target records the identity of the stream its shard holds (seed, start,
generator settings, partitions) beside the per-partition checkpoints. A run
fills in what it was not told from that record, so "the same command again"
resumes the same stream even when ``--start`` defaulted to "now"; what it was
told must agree with the record, or the run is refused (unless ``--reset``).

This module is the one source of the SQL of that state (``cdc_streams``,
``cdc_checkpoints``, ``cdc_snapshots``; ``sql/002_cdc_state.sql``), for every target and for
``verify``. Statements use ``?`` placeholders (a :class:`SqlSession` binds them).

**One writer per shard, newest wins.** A starting process *claims* the shard:
it raises ``writer_epoch`` in ``cdc_streams``, then stamps it on every checkpoint
row, and only then reads the checkpoints it resumes from.
Each batch advances its checkpoints with a compare-and-set on that epoch, in the
batch's own transaction; a process that has been taken over finds no row to
advance, rolls its batch back and stops (:class:`Fenced`). The compare-and-set
also reads the epoch in ``cdc_streams``, which the claim's first step commits:
the old writer stops at its next batch even before the claim's stamp lands, so
a busy old writer cannot starve the stamp where writes conflict instead of
waiting (DuckDB, and so the emulator). Newest wins, as
Kafka producer epochs and Snowpipe Streaming channels do: a restarted or
replacing pod never waits for the old one's lease to run out, and the old one,
however late it wakes up, cannot commit. Checkpoints only move forward.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
from collections.abc import Mapping, Sequence
from typing import Any

from .. import clock
from ..config import LAST_ORDER_DATE, Config, ConfigError
from ..sinks.base import Claim, Fenced, Holder, SinkError, SqlSession, StoredStream, transaction
from .events import order_prefix
from .generator import GENERATOR_VERSION, GeneratorSettings, StreamIdentity
from .traffic import Profile

__all__ = ["Claim", "Fenced", "Holder", "StreamMismatch", "resolve"]

DEFAULT_SEED = 42


class StreamMismatch(Exception):
    """The target holds another stream than the one asked for (a usage error: exit 2)."""


def resolve(config: Config, stored: StoredStream) -> StreamIdentity:
    """The identity this run writes, given what the target holds."""
    config.check_run()  # the command line checked it already; a Service built in-process not
    s, explicit = config.settings, config.explicit
    old = json.loads(stored.identity) if stored.identity and not s.reset else None

    def pick(field: str, given: object, default: object) -> object:
        if field in explicit or old is None:
            return given if field in explicit else default
        return old[field]

    profile, generator = _shape(config, old)
    start_default = clock.to_epoch(clock.utc_now())
    start = int(s.start.timestamp()) if s.start is not None else start_default
    identity = StreamIdentity(
        seed=int(pick("seed", s.seed, DEFAULT_SEED)),  # type: ignore[call-overload]
        start=int(pick("start", start, start_default)),  # type: ignore[call-overload]
        shard=s.shard,
        partitions=int(pick("partitions", s.partitions, s.partitions)),  # type: ignore[call-overload]
        generator=generator,
        traffic=profile,
    )
    if old is not None and old != identity.as_dict():
        raise StreamMismatch(_difference(old, identity.as_dict()))
    _fits(config, identity)
    return identity


def _shape(config: Config, old: dict[str, Any] | None) -> tuple[Profile | None, GeneratorSettings]:
    """The traffic profile and the simulated seconds per event (``--time-scale / --rate``),
    from the flags, else from the stored stream, else the defaults: a profile runs in real
    time; without one the clock keeps its 0.5 s per event of before profiles existed."""
    s, explicit = config.settings, config.explicit
    if "traffic" in explicit or old is None:
        profile = config.traffic_profile()
    else:
        profile = None if old.get("traffic") is None else Profile.from_dict(old["traffic"])
    default = GeneratorSettings()
    if s.time_scale is not None and "time_scale" in explicit:
        gap = s.time_scale / s.rate  # check_run: a time scale comes with a rate
    elif old is not None:
        gap = float(old["generator"]["mean_gap_seconds"])
    elif profile is not None and s.rate > 0:
        gap = 1.0 / s.rate
    else:
        gap = default.mean_gap_seconds
    backdate = default.backdate_days if profile is None else profile.backdate_days
    return profile, GeneratorSettings(mean_gap_seconds=gap, backdate_days=backdate)


def _fits(config: Config, identity: StreamIdentity) -> None:
    """A bounded stream under a profile or a time scale must end before year 9999 (the
    settings check the default clock alone)."""
    events = config.settings.events
    if events is None or identity.generator == GeneratorSettings():
        return
    end = identity.clock().time_of(events)
    if end > LAST_ORDER_DATE.timestamp():
        raise ConfigError(
            config.name_of("events"),
            f"{events} events of this stream would date orders after {LAST_ORDER_DATE:%Y} "
            "(simulated time runs at --time-scale / --rate seconds per event): stop sooner",
        )


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    diffs = []
    for key in ("version", "seed", "start", "partitions", "generator", "traffic"):
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if key == "start":
                a, b = clock.iso(int(str(a))), clock.iso(int(str(b)))
            if key == "version":
                a = f"generator v{a}"
                b = f"generator v{GENERATOR_VERSION}"
            if key == "generator" and isinstance(a, dict) and isinstance(b, dict):
                # mean_gap_seconds: the simulated clock (--time-scale / --rate)
                stored, asked = a, b
                a, b = _fields(stored, asked), _fields(asked, stored)
            if key == "traffic":
                a, b = _profile_name(a), _profile_name(b)
                if a == b:
                    a, b = f"{a} as stored", f"{b} as given now"
            diffs.append(f"{key} {a} (stored) != {b} (asked)")
    return (
        f"the target already holds another stream for shard {new['shard']!r}: "
        + "; ".join(diffs)
        + ". Run with the stored settings to resume it, or add --reset to drop it and start this one"
    )


def _fields(a: dict[str, Any], b: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in a.items() if b.get(k) != v)


def _profile_name(d: object) -> str:
    return str(d["name"]) if isinstance(d, dict) else "steady"


# -- the state in the target -----------------------------------------------------------


def this_writer() -> str:
    """How this process is named to another one that finds it writing a shard."""
    return f"{socket.gethostname()} pid {os.getpid()}"


def load(session: SqlSession, shard: str) -> StoredStream:
    """The stored identity and checkpoints of ``shard``."""
    row = session.execute("SELECT identity FROM cdc_streams WHERE shard = ?", [shard]).fetchone()
    return StoredStream(row[0] if row else None, _checkpoints(session, shard))


def _checkpoints(session: SqlSession, shard: str) -> dict[int, int]:
    rows = session.execute(
        "SELECT partition_id, last_seq FROM cdc_checkpoints WHERE shard = ?", [shard]
    ).fetchall()
    return {int(p): int(s) for p, s in rows}


def committed(session: SqlSession, shard: str, epoch: int, checkpoints: Mapping[int, int]) -> bool:
    """Did the batch with these checkpoints commit? They commit with its rows, all or none.

    Only the shard's writer can tell: once another one holds it, its checkpoints say
    nothing about this batch (they move on with the new writer's), and whatever this
    batch did, this process stops (:class:`Fenced`); the new writer resumes from what
    it read when it took over.
    """
    now = holder(session, shard)
    if now is None or now.epoch != epoch:
        raise _fenced(shard, epoch, now, "its last batch undecided")
    partition, seq = next(iter(checkpoints.items()))
    row = session.execute(
        "SELECT last_seq FROM cdc_checkpoints WHERE shard = ? AND partition_id = ?",
        [shard, partition],
    ).fetchone()
    return row is not None and int(row[0]) >= seq


def holder(session: SqlSession, shard: str) -> Holder | None:
    row = session.execute(
        "SELECT writer_epoch, writer, writer_since FROM cdc_streams WHERE shard = ?", [shard]
    ).fetchone()
    return None if row is None else Holder(int(row[0] or 0), row[1], row[2])


def record(
    session: SqlSession, shard: str, identity: str, partitions: int, reset: bool, writer: str
) -> tuple[int, Holder | None]:
    """First step of a claim, in its own transaction: record the stream (if new) and its
    checkpoint rows, and raise the shard's writer epoch. Returns the new epoch and who
    held the shard before (None: nobody did)."""
    now = clock.utc_now()
    if reset:
        prefix = order_prefix(shard)
        session.execute(
            "DELETE FROM raw_orders WHERE SUBSTR(order_id, 1, ?) = ?", [len(prefix), prefix]
        )
        session.execute("DELETE FROM cdc_checkpoints WHERE shard = ?", [shard])
        session.execute("DELETE FROM cdc_snapshots WHERE shard = ?", [shard])
        session.execute("DELETE FROM cdc_streams WHERE shard = ?", [shard])
    previous = holder(session, shard)
    session.execute(
        "INSERT INTO cdc_streams (shard, identity, created_at, writer_epoch) SELECT ?, ?, ?, 0 "
        "WHERE NOT EXISTS (SELECT 1 FROM cdc_streams WHERE shard = ?)",
        [shard, identity, now, shard],
    )
    values, params = _values([[p] for p in range(partitions)])
    session.execute(
        "INSERT INTO cdc_checkpoints (shard, partition_id, last_seq, updated_at) "  # noqa: S608
        f"SELECT ?, v.partition_id, 0, ? FROM (VALUES {values}) AS v(partition_id) "
        "WHERE v.partition_id NOT IN (SELECT partition_id FROM cdc_checkpoints WHERE shard = ?)",
        [shard, now, *params, shard],
    )
    session.execute(
        "UPDATE cdc_streams SET writer_epoch = COALESCE(writer_epoch, 0) + 1, writer = ?, "
        "writer_since = ? WHERE shard = ?",
        [writer, now, shard],
    )
    mine = holder(session, shard)
    assert mine is not None
    return mine.epoch, previous if previous is not None and previous.epoch else None


def stamp(session: SqlSession, shard: str, epoch: int, previous: Holder | None) -> Claim:
    """Second step, in a transaction of its own whose first statement this is: put ``epoch``
    on every checkpoint row of the shard, then read the checkpoints to resume from.

    From its commit on, a batch of an older writer finds no row to advance. Its own
    transaction is short on purpose: on the emulator (DuckDB underneath) it fails if an
    older writer's batch commits a checkpoint while it runs (and is retried). Epochs only
    rise: a newer claim that stamped first wins, and this one is fenced at once. (``<=``:
    a copy of this statement re-sent after a lost reply stamps the same rows again.)
    """
    stamped = session.changed(
        "UPDATE cdc_checkpoints SET writer_epoch = ? "
        "WHERE shard = ? AND (writer_epoch IS NULL OR writer_epoch <= ?)",
        [epoch, shard, epoch],
    )
    if not stamped:
        now = holder(session, shard)
        raise Fenced(
            f"shard {shard!r} was taken over by {now.describe() if now else 'another writer'} "
            f"while this process (writer epoch {epoch}) was starting: it stops"
        )
    return Claim(shard, epoch, _checkpoints(session, shard), previous)


def advance(
    shard: str,
    epoch: int,
    checkpoints: Mapping[int, int],
    now: dt.datetime,
    *,
    again: bool = False,
) -> tuple[str, list[Any]]:
    """A batch's checkpoint UPDATE: forward only, and only while ``epoch`` holds the shard.

    It must change one row per partition of the batch (see :func:`advanced`); ``again``: a
    batch applied a second time (its checkpoints may already read as its own). It
    writes ``writer_epoch`` too (to the value it already has): under snapshot
    isolation with per-column conflicts (DuckDB, and so the emulator) only a
    write of the column a claim writes makes the two collide, so that a batch
    begun before a claim committed fails instead of committing past it.
    """
    values, params = _values([[p, seq] for p, seq in sorted(checkpoints.items())])
    sql = (
        "UPDATE cdc_checkpoints SET last_seq = v.last_seq, updated_at = ?, "  # noqa: S608
        "writer_epoch = cdc_checkpoints.writer_epoch "
        f"FROM (VALUES {values}) AS v(partition_id, last_seq) "
        "WHERE cdc_checkpoints.shard = ? AND cdc_checkpoints.partition_id = v.partition_id "
        "AND cdc_checkpoints.writer_epoch = ? "
        f"AND cdc_checkpoints.last_seq {'<=' if again else '<'} v.last_seq "
        "AND EXISTS (SELECT 1 FROM cdc_streams "
        "WHERE cdc_streams.shard = ? AND cdc_streams.writer_epoch = ?)"
    )
    return sql, [now, *params, shard, epoch, shard, epoch]


def advanced(session: SqlSession, shard: str, epoch: int, changed: int, wanted: int) -> None:
    """Raise unless the checkpoint UPDATE changed every row it had to (the caller rolls back)."""
    if changed == wanted:
        return
    now = holder(session, shard)
    if now is None or now.epoch != epoch:
        raise _fenced(shard, epoch, now, "its last batch rolled back")
    raise SinkError(
        f"shard {shard!r}: {wanted - changed} of {wanted} checkpoints would not move forward "
        "(a batch applied twice?): stopping rather than write it"
    )


def _fenced(shard: str, epoch: int, now: Holder | None, batch: str) -> Fenced:
    who = now.describe() if now else "nobody: the stream was dropped (--reset)"
    return Fenced(
        f"shard {shard!r} was taken over by {who}; this process (writer epoch {epoch}) "
        f"stops, {batch} (nothing is lost: the new writer resumes from its checkpoints)"
    )


# -- the writers' sessions (Snowflake) ---------------------------------------------------------


#: What a writer's session does: ``control`` claims the shard (and creates the tables),
#: ``worker`` applies batches, ``snapshot`` saves the generator's state (autocommit).
ROLES = ("control", "worker", "snapshot")


def register_session(
    session: SqlSession, shard: str, session_id: str, writer: str, role: str
) -> None:
    """Record one of this writer's sessions (the caller commits, before the session writes)."""
    session.execute(  # once, however often it is sent (a reply lost, the attempt retried)
        "INSERT INTO cdc_sessions (shard, session_id, writer, opened_at, role) "
        "SELECT ?, ?, ?, ?, ? "
        "WHERE NOT EXISTS (SELECT 1 FROM cdc_sessions WHERE shard = ? AND session_id = ?)",
        [shard, session_id, writer, clock.utc_now(), role, shard, session_id],
    )


def others_sessions(
    session: SqlSession, shard: str, mine: Sequence[str], roles: Sequence[str] = ROLES
) -> dict[str, str]:
    """The recorded sessions of the shard's other writers in ``roles``: session id -> writer.
    (A session recorded without a role is taken to be any.)"""
    rows = session.execute(
        "SELECT session_id, writer, role FROM cdc_sessions WHERE shard = ?", [shard]
    ).fetchall()
    return {
        str(sid): str(who)
        for sid, who, role in rows
        if str(sid) not in mine and (role is None or role in roles)
    }


def forget_sessions(session: SqlSession, shard: str, session_ids: Sequence[str]) -> None:
    if session_ids:
        marks = ", ".join(["?"] * len(session_ids))
        session.execute(
            f"DELETE FROM cdc_sessions WHERE shard = ? AND session_id IN ({marks})",  # noqa: S608
            [shard, *session_ids],
        )


# -- generator snapshots ------------------------------------------------------------------

#: Characters of base64 per row of a snapshot: one INSERT each, far below the size of a
#: statement Snowflake accepts (the connector renders bound values into the statement's
#: text). The default ring's snapshot is about 170,000 characters: one part.
SNAPSHOT_PART = 256 * 1024
#: Snapshots kept ahead of the newest one that every partition has passed (that one is
#: always kept: it is where the next restart starts).
SNAPSHOTS_AHEAD = 2


def save_snapshot(session: SqlSession, shard: str, seq: int, identity: str, blob: bytes) -> None:
    """Store the stream's state after ``seq`` events, and drop the snapshots no restart will
    use (another stream's, and all but the newest one every partition has passed and
    ``SNAPSHOTS_AHEAD`` after it): one transaction. Saving the same snapshot twice is harmless."""
    text = base64.b64encode(blob).decode("ascii")
    parts = [text[i : i + SNAPSHOT_PART] for i in range(0, len(text), SNAPSHOT_PART)]
    now = clock.utc_now()
    with transaction(session):
        session.execute(
            "DELETE FROM cdc_snapshots WHERE shard = ? AND (identity <> ? OR seq = ?)",
            [shard, identity, seq],
        )
        for i, part in enumerate(parts):
            session.execute(
                "INSERT INTO cdc_snapshots (shard, identity, seq, part, state, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [shard, identity, seq, i, part, now],
            )
        row = session.execute(
            "SELECT MIN(last_seq) FROM cdc_checkpoints WHERE shard = ?", [shard]
        ).fetchone()
        held = int(row[0]) if row and row[0] is not None else 0
        seqs = session.execute(
            "SELECT DISTINCT seq FROM cdc_snapshots WHERE shard = ?", [shard]
        ).fetchall()
        stale = _stale(sorted(int(s) for (s,) in seqs), held)
        if stale:
            marks = ", ".join(["?"] * len(stale))
            session.execute(
                f"DELETE FROM cdc_snapshots WHERE shard = ? AND seq IN ({marks})",  # noqa: S608
                [shard, *stale],
            )


def _stale(seqs: Sequence[int], held: int) -> list[int]:
    """Of the snapshots at ``seqs`` (ascending), those to drop when every partition holds ``held``."""
    behind = [s for s in seqs if s <= held]
    ahead = [s for s in seqs if s > held]
    return behind[:-1] + ahead[:-SNAPSHOTS_AHEAD]


def load_snapshot(
    session: SqlSession, shard: str, identity: str, upto: int
) -> tuple[int, bytes] | None:
    """The newest snapshot of this stream (``identity``: its digest) at ``seq <= upto``:
    ``(seq, blob)``, or None."""
    rows = session.execute(
        "SELECT seq, part, state FROM cdc_snapshots WHERE shard = ? AND identity = ? AND seq = "
        "(SELECT MAX(seq) FROM cdc_snapshots WHERE shard = ? AND identity = ? AND seq <= ?)",
        [shard, identity, shard, identity, upto],
    ).fetchall()
    if not rows:
        return None
    # Two writers racing may both have saved it (the same bytes: a pure function's state).
    parts = {int(part): str(state) for _, part, state in rows}
    if sorted(parts) != list(range(len(parts))):
        raise ValueError(f"snapshot at seq {rows[0][0]} lacks parts ({sorted(parts)})")
    text = "".join(parts[i] for i in range(len(parts)))
    return int(rows[0][0]), base64.b64decode(text.encode("ascii"), validate=True)


def _values(rows: Sequence[Sequence[Any]]) -> tuple[str, list[Any]]:
    """``(?, ?), (?, ?)`` for ``rows``, and their values in order."""
    width = len(rows[0]) if rows else 1
    one = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([one] * len(rows)), [v for r in rows for v in r]
