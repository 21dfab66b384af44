"""The commands on a topic: ``init`` creates the topics; the reads fold the topic first.

``report``, ``query`` and ``verify`` need tables. On the kafka target they read the topic
``read_committed`` from the stream's start, fold the change events into the live orders
(an insert or update sets an order's row, a delete removes it), and load them into a
DuckDB database in this command's memory, with the stream's identity and, per stream
partition, the last sequence number seen (its checkpoint). The layers are built there as
on a file, and the same code answers. While folding, every record is checked
(:class:`EnvelopeCheck`): the envelope's shape, each partition's sequence numbers rising
one by one through the stream's events (nothing doubled, nothing skipped), a tombstone
after each delete, and each update's ``before`` equal to the order's row as folded so far.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from ... import clock
from ...config import Config, Names
from ...pipeline.events import order_prefix
from ...pipeline.generator import OrderStream, StreamIdentity
from ...pipeline.router import partition_of, partitions_of
from ...verify import check as verifying
from ...watch import reads
from ..base import SinkError, SqlSession, Warehouse
from . import clients
from .sink import KafkaSink, ShardClaim, partitions_for

SHOW = 5
_ROW = ("order_id", "customer_id", "order_date", "status", "amount", "product_id", "quantity")
Row = tuple[str, str, int, str, int, str, int]  # order_date in epoch seconds, amount in cents


def _cents(text: str) -> int:
    return int(Decimal(text) * 100)


def _row(d: dict[str, Any]) -> Row:
    return (
        str(d["order_id"]),
        str(d["customer_id"]),
        int(d["order_date"]) // 1000,
        str(d["status"]),
        _cents(str(d["amount"])),
        str(d["product_id"]),
        int(d["quantity"]),
    )


@dataclass
class Fold:
    """The live orders a topic's change events add up to, and what was wrong on the way."""

    shard: str
    rows: dict[str, Row] = field(default_factory=dict)
    checkpoints: dict[int, int] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)  # change events per stream partition
    records: int = 0
    tombstones: int = 0
    deletes: int = 0
    problems: list[str] = field(default_factory=list)
    bad: int = 0
    _await_tombstone: dict[bytes, int] = field(default_factory=dict)

    def note(self, text: str) -> None:
        self.bad += 1
        if len(self.problems) < SHOW:
            self.problems.append(text)

    def add(self, key: bytes, value: bytes | None, seq: int, part: int, partitions: int) -> None:
        """One record of this shard, in its topic partition's order."""
        self.records += 1
        if value is None:
            self.tombstones += 1
            if self._await_tombstone.pop(key, None) != seq:
                self.note(f"seq {seq}: a tombstone that follows no delete of {key.decode()}")
            return
        last = self.checkpoints.get(part, 0)
        if seq <= last:
            self.note(f"partition {part}: seq {seq} after seq {last} (doubled or out of order)")
        self.checkpoints[part] = max(last, seq)
        self.counts[part] = self.counts.get(part, 0) + 1
        try:
            event = json.loads(value)
            self._apply(key, event, seq, part, partitions)
        except (ValueError, KeyError, TypeError) as exc:
            self.note(f"seq {seq}: not a change event of raw_orders ({type(exc).__name__}: {exc})")

    def _apply(
        self, key: bytes, event: dict[str, Any], seq: int, part: int, partitions: int
    ) -> None:
        if "op" in event:  # Debezium's envelope
            op, before, after, source = (
                event["op"],
                event["before"],
                event["after"],
                event["source"],
            )
            if source["seq"] != seq or source["partition"] != part or source["db"] != self.shard:
                self.note(f"seq {seq}: source {source} disagrees with the record's headers")
            if not isinstance(event.get("ts_ms"), int):
                self.note(f"seq {seq}: ts_ms missing")
        else:  # ExtractNewRecordState's row
            op = event.pop("__op")
            gone = event.pop("__deleted") == "true"
            event.pop("__source_ts_ms")
            before, after = (event, None) if gone else (None, event)
            if op == "u":
                before = None  # the flattened form has no previous image
        oid = str((after or before)["order_id"])
        if key != b'{"order_id":"' + oid.encode() + b'"}':
            self.note(f"seq {seq}: key {key.decode()} is not order {oid}")
        if partition_of(oid, partitions) != part:
            self.note(f"seq {seq}: {oid} is not of partition {part}")
        now = self.rows.get(oid)
        if op == "c":
            if before is not None or after is None or now is not None:
                self.note(f"seq {seq}: insert of {oid}: before must be null, the order new")
            self.rows[oid] = _row(after)
        elif op == "u":
            if after is None or now is None:
                self.note(f"seq {seq}: update of {oid}, which is not live")
            elif before is not None and _row(before) != now:
                self.note(f"seq {seq}: update of {oid}: before {before} is not its row {now}")
            if after is not None:
                self.rows[oid] = _row(after)
        elif op == "d":
            self.deletes += 1
            if after is not None or now is None or (before is not None and _row(before) != now):
                self.note(f"seq {seq}: delete of {oid}: after must be null, before its row")
            self.rows.pop(oid, None)
            self._await_tombstone[key] = seq
        else:
            self.note(f"seq {seq}: op {op!r}")

    def check(self, identity: StreamIdentity) -> verifying.Check:
        """The records against the stream: per partition, exactly its events up to the
        checkpoint (each seq rising, none missing), and the envelope's rules."""
        expected = _counts(identity, self.checkpoints)
        for p in sorted(set(expected) | set(self.counts)):
            want, got = expected.get(p, 0), self.counts.get(p, 0)
            if want != got:
                self.note(
                    f"partition {p}: {got} change events, the stream has {want} up to seq "
                    f"{self.checkpoints.get(p, 0)}"
                )
        events = sum(self.counts.values())
        detail = (
            f"{events:,} change events, {self.tombstones:,} tombstones after "
            f"{self.deletes:,} deletes, {len(self.checkpoints)} partitions"
        )
        if self.bad:
            return verifying.Check(
                "change events = the stream", False, f"{self.bad} problems; {detail}", self.problems
            )
        return verifying.Check("change events = the stream", True, detail)


def _counts(identity: StreamIdentity, checkpoints: dict[int, int]) -> dict[int, int]:
    """Events per partition of the stream up to each partition's checkpoint."""
    top = max(checkpoints.values(), default=0)
    ckpt = np.zeros(identity.partitions, np.int64)
    for p, seq in checkpoints.items():
        ckpt[p] = seq
    counts = np.zeros(identity.partitions, np.int64)
    stream = OrderStream(identity)
    while stream.seq < top:
        changes = stream.take_changes(min(65_536, top - stream.seq))
        parts = partitions_of(changes.order_no, identity.partitions)
        counts += np.bincount(parts[changes.seq <= ckpt[parts]], minlength=identity.partitions)
    return {p: int(n) for p, n in enumerate(counts.tolist()) if n}


def fold(sink: KafkaSink, claim: ShardClaim, identity: StreamIdentity) -> Fold:
    """Read the shard's change events ``read_committed`` from the stream's start, folding."""
    s, admin = sink.settings, sink.admin
    n = claim.topic_partitions
    ends = admin.offsets(sink.topic, n, committed=True)
    ranges = {tp: (claim.start_offsets[tp], ends[tp]) for tp in range(n)}
    head = b'{"order_id":"' + order_prefix(sink.shard).encode()
    out = Fold(sink.shard)
    c = clients.consumer(s, clients.Errors())
    try:
        for msg in clients.read_ranges(c, sink.topic, ranges, s.kafka_timeout):
            key = msg.key() or b""
            if not key.startswith(head):
                continue
            h = clients.headers_of(msg)
            out.add(
                key, msg.value(), int(h["cdc.seq"]), int(h["cdc.partition"]), identity.partitions
            )
    finally:
        c.close()
    return out


def load(fold_: Fold, claim: ShardClaim) -> SqlSession:
    """A DuckDB database in this process's memory with the folded orders, the stream's
    identity and checkpoints, and the layers built from them."""
    import duckdb

    from ...warehouse import layers, sqlfiles
    from ..duckdb import DuckSession, cents_to_decimal

    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    con.execute("SET TimeZone = 'UTC'")
    session = DuckSession(con)
    for stmt in sqlfiles.statements(sqlfiles.TABLE_FILES, Names(), dialect="duckdb"):
        session.execute(stmt)
    rows = list(fold_.rows.values())
    cols: list[tuple[Any, ...]] = list(zip(*rows, strict=True)) if rows else [() for _ in _ROW]
    table = pa.table(
        {
            "order_id": pa.array(cols[0], pa.string()),
            "customer_id": pa.array(cols[1], pa.string()),
            "order_date": pa.array(cols[2], pa.int64()).cast(pa.timestamp("s")),
            "status": pa.array(cols[3], pa.string()),
            "amount": cents_to_decimal(np.array(cols[4], np.int64)),
            "product_id": pa.array(cols[5], pa.string()),
            "quantity": pa.array(cols[6], pa.int32()),
        }
    )
    con.register("cdc_fold", table)
    session.execute("INSERT INTO raw_orders BY NAME SELECT * FROM cdc_fold")
    con.unregister("cdc_fold")
    now = clock.utc_now().replace(tzinfo=None)
    session.execute(
        "INSERT INTO cdc_streams (shard, identity, created_at, writer_epoch, writer) "
        "VALUES (?, ?, ?, ?, ?)",
        [claim.shard, claim.identity, now, claim.epoch, claim.writer],
    )
    for p, seq in sorted(fold_.checkpoints.items()):
        session.execute(
            "INSERT INTO cdc_checkpoints (shard, partition_id, last_seq, updated_at) "
            "VALUES (?, ?, ?, ?)",
            [claim.shard, p, seq, now],
        )
    layers.apply_ddl(session, Warehouse.LOCAL, Names())
    return session


class Folded:
    """The reads of the commands (:class:`service.commands.Reader`) on a folded topic."""

    name = "kafka"

    def __init__(self, session: SqlSession, fold_: Fold, identity: StreamIdentity) -> None:
        self._session, self.fold, self._identity = session, fold_, identity

    @classmethod
    @contextlib.contextmanager
    def open(cls, config: Config) -> Iterator[Folded]:
        sink = KafkaSink(config)
        try:
            sink.open()
            claim = sink.read_claim()
            if claim is None:
                raise SinkError(
                    f"kafka: {sink.state_topic} records no stream for shard {sink.shard!r}: "
                    "nothing to read"
                )
            identity = StreamIdentity.from_json(claim.identity)
            folded = fold(sink, claim, identity)
        finally:
            sink.close()
        session = load(folded, claim)
        try:
            yield cls(session, folded, identity)
        finally:
            session.close()

    def report(self) -> reads.Rows:
        return reads.aggregated(self._session)

    def tasks(self) -> tuple[bool, reads.Rows]:
        return True, reads.tasks(self._session, True)

    def query(self, sql: str) -> reads.Rows:
        return reads.query(self._session, sql, reads.QUERY_ROWS)

    def verify(self, shard: str) -> verifying.Report:
        report = verifying.verify(self._session, Warehouse.LOCAL, shard)
        return verifying.Report(report.stream, [*report.checks, self.fold.check(self._identity)])


def init(config: Config, out: Console) -> int:
    """Create the change-event topic and the state topic where missing (idempotent)."""
    sink = KafkaSink(config)
    try:
        from . import clients

        sink._admin = clients.Admin(config.settings)
        done = sink.create_topics(partitions_for(config.settings))
    finally:
        sink.close()
    table = Table(title=f"ecomm-cdc init: kafka at {config.settings.kafka_bootstrap_servers}")
    for col in ("topic", "state"):
        table.add_column(col)
    for name, what in done:
        table.add_row(name, what)
    out.print(table)
    return 0
