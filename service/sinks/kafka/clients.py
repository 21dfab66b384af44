"""librdkafka clients as the sink uses them: one place for their settings and their errors.

Every client gets the same connection settings (:func:`service.config.kafka.client_config`),
its log kept off stderr (librdkafka's own lines are not ours: an error reaches the user as
one line, through the exception it becomes), and an error callback that remembers the last
error, so that "could not reach the brokers" can say why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import confluent_kafka as ck
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from ...config import Settings
from ...config.kafka import client_config
from ..base import SinkError, TargetConfigError

#: librdkafka error codes that mean "another producer took this transactional id".
FENCED = frozenset(
    {ck.KafkaError.PRODUCER_FENCED, ck.KafkaError._FENCED, ck.KafkaError.INVALID_PRODUCER_EPOCH}
)
#: Errors that configuration, not the network, must fix (exit 2).
_AUTH = frozenset(
    {
        ck.KafkaError._AUTHENTICATION,
        ck.KafkaError.SASL_AUTHENTICATION_FAILED,
        ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
        ck.KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        ck.KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ck.KafkaError._SSL if hasattr(ck.KafkaError, "_SSL") else ck.KafkaError._AUTHENTICATION,
    }
)


#: Where librdkafka's own log lines go (not stderr: a failure reaches the user as one line,
#: through the exception or the error callback). Kept with ``CDC_LOG_LEVEL=debug``.
_LIBRDKAFKA = logging.getLogger("ecomm-cdc.librdkafka")
_LIBRDKAFKA.addHandler(logging.NullHandler())
_LIBRDKAFKA.propagate = False


class Errors:
    """The last error librdkafka reported on a client's background threads."""

    def __init__(self) -> None:
        self.last: ck.KafkaError | None = None
        self._lock = threading.Lock()

    def __call__(self, err: ck.KafkaError) -> None:
        with self._lock:
            # An authentication failure is the one worth telling: keep it over later noise.
            if self.last is None or self.last.code() not in _AUTH:
                self.last = err

    def text(self) -> str:
        return self.last.str() if self.last is not None else "no answer"


def config(settings: Settings, errors: Errors, **extra: Any) -> dict[str, Any]:
    conf = client_config(settings)
    conf.update(
        {
            "error_cb": errors,
            # librdkafka logs to stderr by default; its errors reach us through error_cb.
            "logger": _LIBRDKAFKA,
            "log_level": 7 if settings.log_level == "debug" else 3,
        }
    )
    conf.update(extra)
    return conf


def failure(settings: Settings, err: ck.KafkaError | None, doing: str, errors: Errors) -> SinkError:
    """One line for a failed call: a configuration error (exit 2) or a runtime one (exit 1)."""
    last = errors.last
    if last is not None and last.code() in _AUTH:
        err = last
    if err is not None and err.code() in _AUTH:
        setting = (
            "CDC_KAFKA_SASL_USERNAME"
            if settings.kafka_sasl_mechanism
            else "CDC_KAFKA_SECURITY_PROTOCOL"
        )
        return TargetConfigError(setting, f"kafka: {doing}: the brokers refused us: {err.str()}")
    why = err.str() if err is not None else errors.text()
    if err is not None and err.code() in (ck.KafkaError._TIMED_OUT, ck.KafkaError._TRANSPORT):
        why = f"{why} (last error: {errors.text()})"
    return SinkError(
        f"kafka: {doing}: {why} (brokers {settings.kafka_bootstrap_servers}, "
        f"CDC_KAFKA_BOOTSTRAP_SERVERS)"
    )


def error_of(exc: BaseException) -> ck.KafkaError | None:
    if isinstance(exc, ck.KafkaException) and exc.args and isinstance(exc.args[0], ck.KafkaError):
        return exc.args[0]
    return None


class Admin:
    """Metadata and offsets, bounded by the settings' timeout."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.errors = Errors()
        self.client = AdminClient(config(settings, self.errors))

    def partitions(self, topic: str) -> int | None:
        """How many partitions ``topic`` has (None: it does not exist). Raises when the
        brokers cannot be reached or refuse us."""
        s = self.settings
        try:
            # All topics, not this one: asking for one makes some brokers create it.
            md = self.client.list_topics(timeout=s.kafka_timeout)
        except ck.KafkaException as exc:
            self.client.poll(0.1)  # serves the error callback: why it could not
            raise failure(s, error_of(exc), "cannot reach the brokers", self.errors) from None
        found = md.topics.get(topic)
        if found is None:
            return None
        if found.error is not None:
            if found.error.code() in _AUTH:
                raise failure(s, found.error, f"topic {topic}", self.errors)
            return None
        return len(found.partitions)

    def offsets(self, topic: str, partitions: int, committed: bool) -> list[int]:
        """The end offset of every partition: the last stable one (``committed``), or the
        high watermark."""
        iso = ck.IsolationLevel.READ_COMMITTED if committed else ck.IsolationLevel.READ_UNCOMMITTED
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        asked = {ck.TopicPartition(topic, p): latest for p in range(partitions)}
        out = [0] * partitions
        try:
            futures = self.client.list_offsets(
                asked, isolation_level=iso, request_timeout=self.settings.kafka_timeout
            )
            for tp, future in futures.items():
                out[tp.partition] = int(future.result().offset)
        except ck.KafkaException as exc:
            raise failure(
                self.settings, error_of(exc), f"reading the offsets of {topic}", self.errors
            ) from None
        return out

    def settled(self, topic: str, partitions: int, timeout: float) -> None:
        """Wait until every transaction open on ``topic`` now has ended (committed or aborted):
        its last stable offset has reached today's high watermark."""
        high = self.offsets(topic, partitions, committed=False)
        deadline = time.monotonic() + timeout
        while True:
            stable = self.offsets(topic, partitions, committed=True)
            if all(s >= h for s, h in zip(stable, high, strict=True)):
                return
            if time.monotonic() > deadline:
                raise SinkError(
                    f"kafka: {topic} still has a transaction open after {timeout:g} s "
                    "(another writer of this topic?)"
                )
            time.sleep(0.05)


def consumer(settings: Settings, errors: Errors, **extra: Any) -> ck.Consumer:
    """A consumer that reads what is committed, assigned by hand (no group, no commits)."""
    return ck.Consumer(
        config(
            settings,
            errors,
            **{
                "group.id": "ecomm-cdc-reader",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
                # Reading to an end that is known: no need to wait for more to arrive.
                "fetch.wait.max.ms": 10,
                **extra,
            },
        )
    )


def read_ranges(
    c: ck.Consumer, topic: str, ranges: dict[int, tuple[int, int]], timeout: float
) -> Iterator[ck.Message]:
    """The committed records of several partitions at once: partition p at offsets
    [low, high) of ``ranges[p]``, each partition's in offset order."""
    todo = {p: r for p, r in ranges.items() if r[1] > r[0]}
    if not todo:
        return
    c.assign([ck.TopicPartition(topic, p, low) for p, (low, _) in todo.items()])
    deadline = time.monotonic() + timeout
    try:
        while todo:
            batch = c.consume(num_messages=10_000, timeout=0.2)
            if not batch and time.monotonic() > deadline:
                raise SinkError(f"kafka: reading {topic} stopped answering")
            for msg in batch:
                p = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        todo.pop(p, None)
                        continue
                    raise SinkError(f"kafka: reading {topic} [{p}]: {err.str()}")
                if p not in todo:
                    continue
                offset, high = msg.offset() or 0, todo[p][1]
                if offset >= high:
                    todo.pop(p)
                    continue
                deadline = time.monotonic() + timeout
                yield msg
                if offset >= high - 1:
                    todo.pop(p)
    finally:
        c.unassign()


def headers_of(msg: ck.Message) -> dict[str, bytes]:
    found = msg.headers() or []
    pairs = found.items() if isinstance(found, dict) else found
    return {str(k): v for k, v in pairs if isinstance(v, bytes)}


def call(fn: Callable[[], Any], settings: Settings, doing: str, errors: Errors) -> Any:
    """A client call whose failure becomes one line."""
    try:
        return fn()
    except ck.KafkaException as exc:
        raise failure(settings, error_of(exc), doing, errors) from None
