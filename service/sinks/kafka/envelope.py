"""Change events in Debezium's shape: one record per change, keyed by the order id.

Pure: columns in, ``(stream partition, key, value, seq)`` out, no client. JSON, as
Debezium's JsonConverter writes it with ``schemas.enable=false``:

- key: ``{"order_id": "ORD-0-0000000001"}`` (the table's primary key, as a struct);
- value (``envelope``): ``before``, ``after``, ``source``, ``op`` (``c``/``u``/``d``), ``ts_ms``;
  ``before`` is null for an insert, the order's previous image for an update, its
  last image for a delete, whose ``after`` is null;
- value (``flattened``): ExtractNewRecordState's row, with ``add.fields=op,source.ts_ms``
  and ``delete.handling.mode=rewrite``: the columns, ``__op``, ``__source_ts_ms``,
  ``__deleted`` (a delete carries the last image and ``"true"``);
- a tombstone (same key, null value) after each delete, unless turned off.

The columns are those of ``raw_orders``. ``amount`` is a decimal string ("123.45":
Debezium's ``decimal.handling.mode=string``), ``order_date`` epoch milliseconds
(``io.debezium.time.Timestamp``). ``source.ts_ms`` is the event's time on the
stream's simulated clock (start + 0.5 s per event), a pure function of the stream;
the top-level ``ts_ms`` is when the service wrote it. ``source.seq`` is the event's
sequence number in the stream and ``source.partition`` its partition: a consumer can
check order and completeness with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ...pipeline.events import ORDER_DIGITS, STATUSES, Changes, Op, customer_id, product_id
from ...pipeline.generator import StreamIdentity

VERSION = "0.1.0"
CONNECTOR = "ecomm-cdc"
_OPS = {int(Op.INSERT): "c", int(Op.UPDATE): "u", int(Op.DELETE): "d"}

Form = Literal["envelope", "flattened"]


@dataclass(frozen=True, slots=True)
class Source:
    """What every event's ``source`` block says of where it came from."""

    name: str  # the topic prefix (Debezium's topic.prefix)
    shard: str  # Debezium's "db"
    schema: str
    table: str
    start_ms: int  # the simulated clock's start
    gap_ms: float  # simulated milliseconds per event

    @classmethod
    def of(cls, identity: StreamIdentity, topic: str) -> Source:
        parts = topic.split(".")
        name = parts[0]
        schema, table = (parts[1], parts[2]) if len(parts) == 3 else ("public", "raw_orders")
        gap = identity.generator.mean_gap_seconds * 1000
        return cls(name, identity.shard, schema, table, identity.start * 1000, gap)

    def head(self) -> str:
        """The constant start of the source block, as JSON text."""
        fixed = {"version": VERSION, "connector": CONNECTOR, "name": self.name}
        return json.dumps(fixed, separators=(",", ":"))[:-1]

    def tail(self) -> str:
        fixed = {"snapshot": "false", "db": self.shard, "schema": self.schema, "table": self.table}
        return json.dumps(fixed, separators=(",", ":"))[1:-1]


def key(order_id: str) -> bytes:
    return b'{"order_id":"' + order_id.encode() + b'"}'


def _cents(c: int) -> str:
    sign = "-" if c < 0 else ""
    c = abs(c)
    return f"{sign}{c // 100}.{c % 100:02d}"


def _row(oid: str, cust: int, ts: int, status: int, cents: int, prod: int, qty: int) -> str:
    return (
        f'{{"order_id":"{oid}","customer_id":"{customer_id(cust)}","order_date":{ts * 1000},'
        f'"status":"{STATUSES[status]}","amount":"{_cents(cents)}",'
        f'"product_id":"{product_id(prod)}","quantity":{qty}}}'
    )


def records(
    changes: Changes,
    partitions: np.ndarray,
    source: Source,
    now_ms: int,
    form: Form = "envelope",
    tombstones: bool = True,
) -> Iterator[tuple[int, bytes, bytes | None, int]]:
    """Per event, in sequence order: ``(stream partition, key, value, seq)``, and after a
    delete its tombstone (value None) with the same seq."""
    head, tail = source.head(), source.tail()
    prefix = changes.prefix
    cols = (
        changes.seq, changes.op, changes.order_no, changes.customer, changes.ts,
        changes.status, changes.cents, changes.product, changes.quantity,
        changes.was_status, changes.was_quantity, partitions,
    )  # fmt: skip
    for seq, op, no, cust, ts, status, cents, prod, qty, was_s, was_q, part in zip(
        *(c.tolist() for c in cols), strict=True
    ):
        oid = prefix + str(no).zfill(ORDER_DIGITS)
        k = key(oid)
        image = _row(oid, cust, ts, status, cents, prod, qty)
        source_ms = int(source.start_ms + seq * source.gap_ms)
        if form == "flattened":
            deleted = "true" if op == 3 else "false"
            value = (
                f'{image[:-1]},"__op":"{_OPS[op]}","__source_ts_ms":{source_ms},'
                f'"__deleted":"{deleted}"}}'
            )
        else:
            if op == 1:
                before, after = "null", image
            elif op == 2:
                was_cents = cents // qty * was_q if qty else cents
                before, after = _row(oid, cust, ts, was_s, was_cents, prod, was_q), image
            else:
                before, after = image, "null"
            value = (
                f'{{"before":{before},"after":{after},"source":{head},"ts_ms":{source_ms},'
                f'{tail},"seq":{seq},"partition":{part}}},"op":"{_OPS[op]}","ts_ms":{now_ms}}}'
            )
        yield part, k, value.encode(), seq
        if op == 3 and tombstones:
            yield part, k, None, seq
