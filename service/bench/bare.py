"""Bare DuckDB doing the pipeline's work: the yardstick ``ecomm-cdc bench`` divides by.

The same stream (seed, start, 1,000,000 events by default) is cut, before the clock
starts, into the batches the service would apply: routed to 4 workers by partition,
5,000 events a batch, each collapsed to its net effect and built into the same
Arrow table. Timed: one connection applying them in turn, each batch one
transaction of the sink's own statements (the ranged DELETE of the orders it
updates or deletes, the INSERT of the new images) and the checkpoint UPDATE, on
a file opened with the sink's settings (memory limit, WAL threshold). What the
service adds on top (generating, routing, batching, building the tables, the
change log of the refresh by deltas, the writer's epoch check, forcing WAL
checkpoints for four writers) is what the ratio measures.

Both runs end with the same rows: :func:`digest` of ``raw_orders`` is compared.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ..pipeline import checkpoint
from ..pipeline.generator import GeneratorSettings, OrderStream, StreamIdentity
from ..pipeline.net_effect import net_effect
from ..pipeline.router import partitions_of, worker_of
from ..sinks import duckdb as duck
from ..sinks.duckdb import DuckDBSink

#: A content digest of raw_orders: equal digests, equal tables (to a hash collision).
DIGEST_SQL = (
    "SELECT count(*), coalesce(sum(hash(order_id, customer_id, order_date, status, amount, "
    "product_id, quantity)::HUGEINT), 0) FROM raw_orders"
)


@dataclass
class Bare:
    events: int
    seconds: float  # first BEGIN to last COMMIT
    batches: int
    rows: int  # rows of raw_orders at the end
    digest: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@dataclass
class _Prepared:
    table: pa.Table
    statements: list[tuple[str, list[Any]]]  # the sink's own (duckdb.row_statements)
    checkpoints: dict[int, int]


def digest(con: object) -> tuple[int, str]:
    """(rows, digest) of raw_orders on a DuckDB connection."""
    row = con.execute(DIGEST_SQL).fetchone()  # type: ignore[attr-defined]
    return int(row[0]), f"{int(row[1]) & (2**64 - 1):016x}"


def _batches(
    stream: OrderStream, events: int, workers: int, batch_size: int, partitions: int
) -> list[_Prepared]:
    """The stream cut as the service cuts it: per worker, ``batch_size`` events a batch."""
    changes = stream.take_changes(events)
    parts = partitions_of(changes.order_no, partitions)
    owner = np.array([worker_of(p, workers) for p in range(partitions)], np.int64)[parts]
    per_worker = []
    for w in range(workers):
        mine = owner == w
        c, p = changes.take(mine), parts[mine]
        per_worker.append(
            [
                net_effect(w, c.take(slice(i, i + batch_size)), p[i : i + batch_size])
                for i in range(0, len(c), batch_size)
            ]
        )
    out: list[_Prepared] = []
    for i in range(max(len(b) for b in per_worker)):  # the workers' batches in turn
        for batches in per_worker:
            if i >= len(batches):
                continue
            batch = batches[i]
            table = duck.batch_table(batch.rows)
            out.append(_Prepared(table, duck.row_statements(batch, table), batch.checkpoints))
    return out


def bare_duckdb(
    events: int,
    path: Path,
    seed: int,
    start: str,
    workers: int = 4,
    batch_size: int = 5_000,
    partitions: int = 64,
) -> Bare:
    """Apply the stream's batches to a fresh DuckDB file with nothing but DuckDB; timed."""
    for p in (path, Path(f"{path}.wal")):
        p.unlink(missing_ok=True)
    begin = int(dt.datetime.fromisoformat(start).replace(tzinfo=dt.UTC).timestamp())
    identity = StreamIdentity(seed, begin, "0", partitions, GeneratorSettings())
    prepared = _batches(OrderStream(identity), events, workers, batch_size, partitions)
    sink = DuckDBSink(path, workers=workers)
    sink.open()
    try:
        claim = sink.claim_stream(json.dumps(identity.as_dict()), partitions, False)
        con = sink.con
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        t0 = time.perf_counter()
        for b in prepared:
            con.register("cdc_batch", b.table)
            con.execute("BEGIN TRANSACTION")
            for sql, params in b.statements:
                con.execute(sql, params)
            sql, params = checkpoint.advance(claim.shard, claim.epoch, b.checkpoints, now)
            con.execute(sql, params)
            con.execute("COMMIT")
            con.unregister("cdc_batch")
        seconds = time.perf_counter() - t0
        rows, dig = digest(con)
    finally:
        with contextlib.suppress(Exception):
            sink.close()
    return Bare(events, seconds, len(prepared), rows, dig)
