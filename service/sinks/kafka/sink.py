"""``--target kafka``: each change of the stream as a change event on a topic, exactly once.

**Where each change goes.** Stream partition p (all changes of one order: the router)
goes to topic partition ``p % N`` of an N-partition topic, so every order's changes are
in one topic partition, in the order they happened (one worker writes a stream partition,
one transaction after another). ``ecomm-cdc init --target kafka`` creates the topic with as
many partitions as the stream has (64): one topic partition per stream partition.

**Exactly once.** Each worker has a transactional producer, ``transactional.id =
ecomm-cdc.<topic>.<shard>.<worker>``; a batch is one Kafka transaction holding a record per
change (and a tombstone per delete). Every record carries its sequence number and stream
partition (headers ``cdc.seq``, ``cdc.partition``): the committed records *are* the
checkpoints. A starting process takes the shard over (newest wins, as on every target):

1. it reads the shard's claim on the state topic (``<topic>.cdc_state``: the stream's
   identity, the claim's epoch, the writer, how many workers wrote it);
2. it initialises the transactional ids of every worker the shard has had
   (``init_transactions``): the broker fences the old producers (their next send or
   commit fails with PRODUCER_FENCED: that process stops, exit 1, naming this one) and
   aborts their open transactions;
3. it writes its own claim (epoch + 1), waits until no transaction begun before is still
   open on the topic, then reads, ``read_committed``, the tail of each topic partition
   back to the last record of each of its stream partitions: where each one resumes.

Reading the checkpoints from the records themselves (rather than from checkpoint records
written beside them) means a restart resumes after exactly what a ``read_committed``
consumer of the same brokers sees, committed batch by committed batch.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import confluent_kafka as ck

from ... import clock, logs
from ...config import Config, Names, Settings
from ...config.kafka import state_topic
from ...pipeline import checkpoint
from ...pipeline.events import Batch, order_prefix
from ...pipeline.generator import StreamIdentity
from ..base import (
    Claim,
    Fenced,
    Holder,
    SinkError,
    SqlSession,
    StoredStream,
    TargetConfigError,
    Warehouse,
)
from . import clients, envelope

if TYPE_CHECKING:
    from ...retry import Phase

T = TypeVar("T")
log = logs.get("sink")

#: Records read back from the end of a topic partition at first, doubled until every stream
#: partition of the shard that maps there has been found (or the stream's start reached).
TAIL = 4096
#: Seconds a fenced writer looks for the claim of the process that fenced it.
FENCED_LOOK = 5.0


@dataclass(frozen=True, slots=True)
class ShardClaim:
    """The state topic's record of a shard: its stream, and who writes it since when."""

    shard: str
    identity: str
    epoch: int
    writer: str
    since: str  # ISO 8601, UTC
    workers: int  # the most workers the shard has had: the transactional ids to fence
    topic_partitions: int
    start_offsets: list[int]  # where the stream begins in each topic partition

    def holder(self) -> Holder:
        since = dt.datetime.fromisoformat(self.since) if self.since else None
        return Holder(self.epoch, self.writer, since)

    def encode(self) -> bytes:
        return json.dumps(
            {
                "shard": self.shard,
                "identity": self.identity,
                "epoch": self.epoch,
                "writer": self.writer,
                "since": self.since,
                "workers": self.workers,
                "topic_partitions": self.topic_partitions,
                "start_offsets": self.start_offsets,
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> ShardClaim:
        d = json.loads(raw)
        return cls(
            str(d["shard"]),
            str(d["identity"]),
            int(d["epoch"]),
            str(d["writer"]),
            str(d["since"]),
            int(d["workers"]),
            int(d["topic_partitions"]),
            [int(x) for x in d["start_offsets"]],
        )


def claim_key(shard: str) -> bytes:
    return f"stream/{shard}".encode()


def transactional_id(topic: str, shard: str, worker: int) -> str:
    return f"ecomm-cdc.{topic}.{shard}.{worker}"


class KafkaSink:
    """A topic of change events (and a state topic of claims). See the module's docstring."""

    name = "kafka"
    #: No tables and no layers: the commands fold the topic into a database of their own.
    warehouse = Warehouse.NONE
    keep_sessions = True
    names = Names()

    def __init__(self, config: Config) -> None:
        s = config.settings
        self.settings: Settings = s
        self.shard = s.shard
        self.topic = s.kafka_topic
        self.state_topic = state_topic(s)
        self.workers = s.workers
        self.partitions = 0  # of the topic, known after open()
        self._admin: clients.Admin | None = None
        self._claim: ShardClaim | None = None
        self._producers: dict[int, ck.Producer] = {}
        self._errors: dict[int, clients.Errors] = {}
        self._lock = threading.Lock()

    # -- opening, and the shard's claim ---------------------------------------------------

    @property
    def admin(self) -> clients.Admin:
        if self._admin is None:
            raise SinkError("the kafka sink is not open")
        return self._admin

    def open(self) -> None:
        """Reach the brokers and find both topics (the service creates neither: see init)."""
        self._admin = admin = clients.Admin(self.settings)
        found = admin.partitions(self.topic)
        if found is None:
            raise TargetConfigError(
                "CDC_KAFKA_TOPIC",
                f"topic {self.topic!r} does not exist on the brokers and ecomm-cdc does not "
                "create it on a run: `ecomm-cdc init --target kafka` creates it (and the "
                "state topic), or create them yourself (docs/kafka.md)",
            )
        if admin.partitions(self.state_topic) is None:
            raise TargetConfigError(
                "CDC_KAFKA_STATE_TOPIC",
                f"topic {self.state_topic!r} (the stream's claims) does not exist: "
                "`ecomm-cdc init --target kafka` creates it (compacted, one partition)",
            )
        self.partitions = found

    def create_topics(self, partitions: int) -> list[tuple[str, str]]:
        """``init``: the change-event topic (``partitions`` partitions) and the compacted state
        topic, where missing. Returns (topic, what happened) for each."""
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

        admin = self.admin
        wanted = [
            (self.topic, NewTopic(self.topic, partitions, 1)),
            (
                self.state_topic,
                NewTopic(self.state_topic, 1, 1, config={"cleanup.policy": "compact"}),
            ),
        ]
        done: list[tuple[str, str]] = []
        for name, spec in wanted:
            have = admin.partitions(name)
            if have is not None:
                done.append((name, f"exists, {have} partitions"))
                continue
            future = admin.client.create_topics([spec], request_timeout=self.settings.kafka_timeout)
            try:
                future[name].result(self.settings.kafka_timeout)
            except ck.KafkaException as exc:
                raise clients.failure(
                    self.settings, clients.error_of(exc), f"creating topic {name}", admin.errors
                ) from None
            done.append((name, f"created, {spec.num_partitions} partitions"))
        self.partitions = admin.partitions(self.topic) or partitions
        return done

    def read_claim(self, shard: str | None = None) -> ShardClaim | None:
        """The newest claim of ``shard`` (default: this sink's) on the state topic."""
        want = claim_key(shard or self.shard)
        s, admin = self.settings, self.admin
        parts = admin.partitions(self.state_topic) or 1
        ends = admin.offsets(self.state_topic, parts, committed=True)
        errors = clients.Errors()
        found: ShardClaim | None = None
        c = clients.consumer(s, errors)
        try:
            ranges = {p: (0, end) for p, end in enumerate(ends)}
            for msg in clients.read_ranges(c, self.state_topic, ranges, s.kafka_timeout):
                value = msg.value()
                if msg.key() == want and value:
                    claim = ShardClaim.decode(value)
                    if found is None or claim.epoch >= found.epoch:
                        found = claim
        finally:
            c.close()
        return found

    def load_stream(self) -> StoredStream:
        """The stream's identity (its checkpoints are read by the claim, after fencing)."""
        claim = self.read_claim()
        return StoredStream(claim.identity if claim else None, {})

    def claim_stream(self, identity: str, partitions: int, reset: bool) -> Claim:
        s, admin = self.settings, self.admin
        old = self.read_claim()
        if old is not None and not reset and old.topic_partitions != self.partitions:
            raise TargetConfigError(
                "CDC_KAFKA_TOPIC",
                f"{self.topic} has {self.partitions} partitions; the stream was written to "
                f"{old.topic_partitions} (an order's changes would be split across partitions): "
                "restore the count, or start over with --reset",
            )
        workers = max(self.workers, old.workers if old else 0)
        self._fence(workers)
        admin.settled(self.topic, self.partitions, max(s.kafka_timeout, 10.0))
        if old is None or reset:
            starts = admin.offsets(self.topic, self.partitions, committed=True)
        else:
            starts = old.start_offsets
        claim = ShardClaim(
            shard=self.shard,
            identity=identity,
            epoch=(old.epoch if old else 0) + 1,
            writer=checkpoint.this_writer(),
            since=clock.utc_now().replace(tzinfo=None).isoformat(timespec="seconds"),
            workers=workers,
            topic_partitions=self.partitions,
            start_offsets=starts,
        )
        self._write_claim(claim)
        self._claim = claim
        checkpoints = self.scan(claim, partitions)
        return Claim(self.shard, claim.epoch, checkpoints, old.holder() if old else None)

    def _fence(self, workers: int) -> None:
        """Initialise every transactional id the shard has used: the broker fences their
        older producers and aborts what they left open. Ours are kept for the writers."""
        s = self.settings
        for w in range(workers):
            errors = clients.Errors()
            conf = clients.config(
                s,
                errors,
                **{
                    "transactional.id": transactional_id(self.topic, self.shard, w),
                    "linger.ms": s.kafka_linger_ms,
                    "compression.type": s.kafka_compression,
                    "transaction.timeout.ms": 60_000,
                },
            )
            producer = ck.Producer(conf)
            clients.call(
                lambda: producer.init_transactions(s.kafka_timeout),  # noqa: B023 (called at once)
                s,
                f"taking over the transactional id of worker {w}",
                errors,
            )
            if w < self.workers:
                self._producers[w], self._errors[w] = producer, errors

    def _write_claim(self, claim: ShardClaim) -> None:
        s = self.settings
        errors = clients.Errors()
        producer = ck.Producer(clients.config(s, errors, **{"enable.idempotence": True}))
        producer.produce(self.state_topic, claim.encode(), claim_key(self.shard))
        left = producer.flush(s.kafka_timeout)
        if left:
            raise clients.failure(s, None, "writing the claim to the state topic", errors)

    def scan(self, claim: ShardClaim, partitions: int) -> dict[int, int]:
        """The last committed seq of each stream partition of the shard: read back from the
        end of each topic partition, a growing window at a time."""
        s = self.settings
        n = claim.topic_partitions
        ends = self.admin.offsets(self.topic, n, committed=True)
        mine = order_prefix(self.shard).encode()
        key_head = b'{"order_id":"' + mine
        found: dict[int, int] = {}
        wanted = {tp: {p for p in range(partitions) if p % n == tp} for tp in range(n)}
        starts = [
            claim.start_offsets[tp] if tp < len(claim.start_offsets) else 0 for tp in range(n)
        ]
        high, window = list(ends), TAIL
        errors = clients.Errors()
        c = clients.consumer(s, errors)
        try:
            while True:
                ranges = {
                    tp: (max(starts[tp], high[tp] - window), high[tp])
                    for tp in range(n)
                    if high[tp] > starts[tp] and not wanted[tp] <= set(found)
                }
                if not ranges:
                    return found
                for msg in clients.read_ranges(c, self.topic, ranges, s.kafka_timeout):
                    if not (msg.key() or b"").startswith(key_head):
                        continue
                    h = clients.headers_of(msg)
                    p, seq = int(h["cdc.partition"]), int(h["cdc.seq"])
                    found[p] = max(found.get(p, 0), seq)
                for tp, (low, _) in ranges.items():
                    high[tp] = low
                window *= 2
        finally:
            c.close()

    def newer_holder(self, epoch: int) -> Holder | None:
        """Who took the shard over from ``epoch`` (looked for a few seconds: the new writer
        fences before it records its claim)."""
        deadline = time.monotonic() + FENCED_LOOK
        while True:
            with contextlib.suppress(SinkError):
                claim = self.read_claim()
                if claim is not None and claim.epoch > epoch:
                    return claim.holder()
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    # -- writing -------------------------------------------------------------------------

    def writer(self, worker: int) -> KafkaWriter:
        with self._lock:
            claim = self._claim
            producer = self._producers.pop(worker, None)
            errors = self._errors.pop(worker, clients.Errors())
        if claim is None or producer is None:
            raise SinkError("the kafka sink has no claim on its shard: claim_stream first")
        identity = StreamIdentity.from_json(claim.identity)
        return KafkaWriter(self, producer, errors, claim, envelope.Source.of(identity, self.topic))

    def connect_sql(self, timeout: float | None = None) -> SqlSession:
        raise SinkError(
            "kafka: the topic holds change events, not tables; `ecomm-cdc report`, `query` "
            "and `verify` fold it into a database of their own (docs/kafka.md)"
        )

    def run(self, fn: Callable[[SqlSession], T], doing: str, phase: Phase) -> T:
        return fn(self.connect_sql())

    def close(self) -> None:
        with self._lock:
            self._producers.clear()
            self._errors.clear()
        self._admin = None


class KafkaWriter:
    """One worker's transactional producer: a batch is one transaction."""

    def __init__(
        self,
        sink: KafkaSink,
        producer: ck.Producer,
        errors: clients.Errors,
        claim: ShardClaim,
        source: envelope.Source,
    ) -> None:
        self.retries = 0
        self._sink, self._producer, self._errors = sink, producer, errors
        self._claim = claim
        self._source = source
        self._topic = sink.topic
        self._n = claim.topic_partitions
        s = sink.settings
        self._form, self._tombstones = s.kafka_format, s.kafka_tombstones
        self._timeout, self._give_up = s.kafka_timeout, s.retry_timeout

    def apply(self, batch: Batch) -> None:
        parts = batch.partitions
        if parts is None:
            raise SinkError("kafka: a batch without its changes' partitions")
        now_ms = int(time.time() * 1000)
        records = list(
            envelope.records(
                batch.changes, parts, self._source, now_ms, self._form, self._tombstones
            )
        )
        deadline = time.monotonic() + self._give_up
        while True:
            try:
                self._produce(records)
                self._commit(deadline)
                return
            except ck.KafkaException as exc:
                err = clients.error_of(exc)
                self._settle(err, deadline)

    def _produce(self, records: list[tuple[int, bytes, bytes | None, int]]) -> None:
        p, topic, n = self._producer, self._topic, self._n
        p.begin_transaction()
        produce = p.produce
        for part, key, value, seq in records:
            headers: list[tuple[str, str | bytes | None]] = [
                ("cdc.seq", str(seq).encode()),
                ("cdc.partition", str(part).encode()),
            ]
            while True:
                try:
                    produce(topic, value, key, partition=part % n, headers=headers)
                    break
                except BufferError:  # librdkafka's queue is full: let it send
                    p.poll(0.05)

    def _commit(self, deadline: float) -> None:
        """Commit the open transaction. A retriable failure (a timeout, say) leaves it in
        doubt, so the commit itself is asked again (librdkafka: "retry call to resume"),
        never the batch: a new transaction could write the batch a second time."""
        while True:
            try:
                self._producer.commit_transaction(self._timeout)
                return
            except ck.KafkaException as exc:
                err = clients.error_of(exc)
                if err is None or not err.retriable() or err.txn_requires_abort():
                    raise
                if err.code() in clients.FENCED or time.monotonic() > deadline:
                    raise
                self._retrying(err)
                time.sleep(min(1.0, 0.05 * self.retries))

    def _settle(self, err: ck.KafkaError | None, deadline: float) -> None:
        """After a failed transaction: stop (fenced, fatal, out of time) or get ready to retry."""
        s = self._sink.settings
        if err is not None and err.code() in clients.FENCED:
            raise self._fenced()
        if err is None or err.fatal() or time.monotonic() > deadline:
            raise clients.failure(s, err, "a batch's transaction failed", self._errors)
        self._retrying(err)
        if err.txn_requires_abort():
            try:
                self._producer.abort_transaction(self._timeout)
            except ck.KafkaException as exc:
                again = clients.error_of(exc)
                if again is not None and again.code() in clients.FENCED:
                    raise self._fenced() from None
        time.sleep(min(1.0, 0.05 * self.retries))

    def _retrying(self, err: ck.KafkaError) -> None:
        """Before a retry (of a commit or of a batch): stop if a newer writer has claimed the
        shard, else count it and say so. The broker fences this producer, but a fenced
        commit can come back as a timeout rather than as PRODUCER_FENCED (seen on Tansu);
        the claim on the state topic says it either way."""
        try:
            claim = self._sink.read_claim()
        except SinkError:
            claim = None  # the brokers do not answer: the retry will tell
        if claim is not None and claim.epoch > self._claim.epoch:
            raise self._fenced()
        self.retries += 1
        log.warning("sink.retry", target="kafka", error=err.str(), retries=self.retries)

    def _fenced(self) -> Fenced:
        epoch = self._claim.epoch
        now = self._sink.newer_holder(epoch)
        who = now.describe() if now else "another writer (its claim not yet readable)"
        return Fenced(
            f"shard {self._claim.shard!r} was taken over by {who}; this process (writer "
            f"epoch {epoch}) stops, its open transaction aborted (nothing is lost: the new "
            "writer resumes from the committed records)"
        )

    def close(self) -> None:
        self._producer = None  # type: ignore[assignment]


def partitions_for(settings: Settings) -> int:
    """The topic partitions ``init`` creates: one per stream partition."""
    return settings.partitions


__all__ = ["KafkaSink", "KafkaWriter", "ShardClaim", "partitions_for"]
