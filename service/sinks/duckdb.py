"""The embedded default: a DuckDB file, written through Arrow (bulk paths only).

Each batch is one transaction on the worker's own cursor, from one Arrow table
of its net rows: one ``DELETE ... IN (SELECT ...)`` of the orders it updates or
deletes, one ``INSERT ... SELECT`` of the new images (inserts and updates), and
the checkpoint UPDATE of :mod:`service.checkpoint`. Tables come from ``sql/``,
translated from Snowflake's dialect.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import checkpoint, clock, logs, sqlfiles
from ..config import Names
from ..events import ORDER_DIGITS, STATUSES, Batch, Changes, Op, customer_id, product_id
from .base import (
    Claim,
    Dialect,
    SinkError,
    StoredStream,
    TargetConfigError,
    Warehouse,
    transaction,
)

_AMOUNT = pa.decimal128(12, 2)
_SCHEMA = pa.schema(
    [
        ("order_id", pa.string()),
        ("customer_id", pa.string()),
        ("order_date", pa.timestamp("s")),
        ("status", pa.string()),
        ("amount", _AMOUNT),
        ("product_id", pa.string()),
        ("quantity", pa.int32()),
    ]
)
#: An update is a delete and an insert of the new image: DuckDB's in-place
#: UPDATE of text columns cost more than both, and kept version chains in memory.
_ROWS = """
INSERT INTO raw_orders (order_id, customer_id, order_date, status, amount, product_id, quantity)
SELECT order_id, customer_id, order_date, status, amount, product_id, quantity
FROM cdc_batch WHERE op <> 3
"""
#: The orders the batch touched, for the local refresh to follow (service/deltas.py).
_TOUCHED = "INSERT INTO cdc_changed_orders SELECT order_id FROM cdc_batch"
#: The range lets DuckDB skip every row group outside it (zone maps): only the
#: recent end of the table is scanned, however long the table grows.
_GONE = """
DELETE FROM raw_orders
WHERE order_id BETWEEN ? AND ?
  AND order_id IN (SELECT order_id FROM cdc_batch WHERE op <> 1)
"""
#: WAL size that triggers a checkpoint. DuckDB's default (16 MB) checkpoints
#: every few batches, which doubled the cost of a commit; the WAL is replayed
#: on open after a crash either way.
_CHECKPOINT_THRESHOLD = "256MB"
#: DuckDB's memory limit (by default it would take 80 % of RAM): a floor, plus
#: some per worker, since each open transaction pins blocks of its own. Measured
#: with 64-event batches: at a flat 64 MB, 16 workers ran out of memory in 1 of 3
#: runs (and in 5 of 7 in a review); at 48 + 4 x 16 = 112 MB, 6 of 6 passed; 1-32
#: workers with 64-event batches and 2-16 workers with 20,000-200,000-event
#: batches ran through. Data beyond the limit lives in the file.
_MEMORY_PER_WORKER_MB = 4
_MEMORY_FLOOR_MB = 48


def _out_of_memory(exc: duckdb.Error) -> bool:
    text = str(exc).lower()
    return isinstance(exc, duckdb.OutOfMemoryException) or any(
        marker in text for marker in ("out of memory", "failed to pin block", "could not allocate")
    )


def memory_limit_mb(workers: int) -> int:
    """The default limit (``CDC_DUCKDB_MEMORY_MB`` overrides it)."""
    return _MEMORY_FLOOR_MB + _MEMORY_PER_WORKER_MB * workers


def cents_to_decimal(cents: np.ndarray | Sequence[int]) -> pa.Array:
    """Integer cents as a decimal(12, 2) array, without a Python Decimal per value.

    A decimal128 value is its unscaled integer in 16 little-endian bytes, so
    cents are the low word and the sign extension the high word.
    """
    low = np.asarray(cents, dtype=np.int64)
    words = np.empty((len(low), 2), dtype=np.int64)
    words[:, 0] = low
    words[:, 1] = low >> 63
    return pa.Array.from_buffers(_AMOUNT, len(low), [None, pa.py_buffer(words)])


_STATUS_NAMES = pa.array(STATUSES, pa.string())


class _IdTable:
    """Text ids by index (customers, products): rendered once, then taken by Arrow."""

    def __init__(self, render: Callable[[int], str]) -> None:
        self._render = render
        self._ids = pa.array([], pa.string())
        self._lock = threading.Lock()

    def take(self, index: np.ndarray) -> pa.Array:
        ids = self._ids
        if len(index) and int(index.max()) >= len(ids):
            with self._lock:
                size = max(1024, 1 << int(index.max()).bit_length())
                if size > len(self._ids):
                    self._ids = pa.array([self._render(i) for i in range(size)], pa.string())
                ids = self._ids
        return ids.take(pa.array(index))


_CUSTOMERS = _IdTable(customer_id)
_PRODUCTS = _IdTable(product_id)


def order_ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    """``events.order_id`` for an array of numbers, in Arrow's kernels."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), ORDER_DIGITS, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def batch_table(rows: Changes) -> pa.Table:
    """A batch's net rows as an Arrow table shaped like ``raw_orders`` plus ``op``.

    Built from the arrays with Arrow's kernels: no Python object per row.
    """
    return pa.table(
        {
            "op": pa.array(rows.op, pa.int8()),
            "order_id": order_ids(rows.prefix, rows.order_no),
            "customer_id": _CUSTOMERS.take(rows.customer),
            "order_date": pa.array(rows.ts, pa.timestamp("s")),
            "status": pa.DictionaryArray.from_arrays(
                pa.array(rows.status, pa.int8()), _STATUS_NAMES
            ),
            "amount": cents_to_decimal(rows.cents),
            "product_id": _PRODUCTS.take(rows.product),
            "quantity": pa.array(rows.quantity.astype(np.int32), pa.int32()),
        }
    )


class DuckSession:
    """A DuckDB connection (or cursor) as a :class:`SqlSession`."""

    dialect: Dialect = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con

    def execute(self, sql: str, params: Sequence[Any] = ()) -> duckdb.DuckDBPyConnection:
        # A DuckDB connection executes itself: its cursor() would be another session.
        return self.con.execute(sql, list(params)) if params else self.con.execute(sql)

    def changed(self, sql: str, params: Sequence[Any] = ()) -> int:
        row = self.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    def begin(self) -> None:
        self.con.execute("BEGIN TRANSACTION")

    def commit(self) -> None:
        self.con.execute("COMMIT")

    def rollback(self) -> None:
        self.con.execute("ROLLBACK")

    def close(self) -> None:
        self.con.close()


class DuckDBWriter:
    retries = 0  # a local file: nothing is retried

    def __init__(self, con: duckdb.DuckDBPyConnection, claim: Claim, memory_mb: int = 0) -> None:
        self._session = DuckSession(con)
        self._claim = claim
        self._memory_mb = memory_mb

    def apply(self, batch: Batch) -> None:
        try:
            self._apply(batch)
        except duckdb.Error as exc:
            # Out of memory shows up as more than one exception type (an
            # OutOfMemoryException, a commit that "failed to pin block", ...).
            if _out_of_memory(exc):
                raise SinkError(
                    f"DuckDB ran out of its {self._memory_mb} MB memory limit "
                    f"(CDC_DUCKDB_MEMORY_MB raises it): {logs.one_line(exc)}"
                ) from None
            raise

    def _apply(self, batch: Batch) -> None:
        session, rows, claim = self._session, batch.rows, self._claim
        sizes = batch.sizes()
        table = batch_table(rows)
        gone = table.column("order_id").filter(pa.array(rows.op != Op.INSERT))
        session.con.register("cdc_batch", table)
        try:
            with transaction(session):
                if len(gone):
                    # The range of the ids as text (an 11-digit number sorts below a
                    # 10-digit one): the bounds of the strings, not of the numbers.
                    bounds = pc.min_max(gone)
                    session.execute(_GONE, [bounds["min"].as_py(), bounds["max"].as_py()])
                if sizes[Op.INSERT] or sizes[Op.UPDATE]:
                    session.execute(_ROWS)
                session.execute(_TOUCHED)
                sql, params = checkpoint.advance(
                    claim.shard, claim.epoch, batch.checkpoints, clock.utc_now()
                )
                changed = session.changed(sql, params)
                checkpoint.advanced(
                    session, claim.shard, claim.epoch, changed, len(batch.checkpoints)
                )
        finally:
            # Never in place of the error that is being raised (a cursor whose
            # ROLLBACK failed refuses even this).
            with contextlib.suppress(duckdb.Error):
                session.con.unregister("cdc_batch")

    def close(self) -> None:
        self._session.close()


class DuckDBSink:
    """A DuckDB file. One process at a time (DuckDB locks the file)."""

    name = "duckdb"
    warehouse = Warehouse.LOCAL
    names = Names()

    def __init__(
        self,
        path: Path,
        shard: str = "0",
        setting: str = "CDC_DUCKDB_PATH",
        workers: int = 4,
        memory_mb: int | None = None,
    ) -> None:
        self.path = path
        self.shard = shard
        self.workers = workers
        #: DuckDB's memory limit in MB.
        self.memory_mb = memory_mb or memory_limit_mb(workers)
        self._setting = setting
        self._con: duckdb.DuckDBPyConnection | None = None
        self._claim: Claim | None = None
        self._lock = threading.Lock()

    def open(self) -> None:
        path = self.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TargetConfigError(
                self._setting, f"cannot create {path.parent}: {exc.strerror}"
            ) from None
        if path.is_dir():
            raise TargetConfigError(self._setting, f"{path} is a directory, not a database file")
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            text = logs.one_line(exc)
            if "lock" in text.lower():
                raise SinkError(f"{path} is in use by another process ({text})") from None
            raise TargetConfigError(self._setting, f"cannot open {path}: {text}") from None
        except duckdb.Error as exc:
            raise TargetConfigError(
                self._setting, f"cannot open {path}: {logs.one_line(exc)}"
            ) from None
        self._con.execute("SET TimeZone = 'UTC'")
        self._con.execute(f"SET checkpoint_threshold = '{_CHECKPOINT_THRESHOLD}'")
        self._con.execute(f"SET memory_limit = '{int(self.memory_mb)}MB'")
        for stmt in sqlfiles.statements("00", self.names, "duckdb") + sqlfiles.local_ddl("duckdb"):
            self._con.execute(stmt)

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise SinkError("the DuckDB sink is not open")
        return self._con

    def load_stream(self) -> StoredStream:
        return checkpoint.load(DuckSession(self.con), self.shard)

    def claim_stream(self, identity: str, partitions: int, reset: bool) -> Claim:
        with transaction(DuckSession(self.con)) as session:
            self._claim = checkpoint.claim(
                session, self.shard, identity, partitions, reset, checkpoint.this_writer()
            )
        return self._claim

    @property
    def claim(self) -> Claim:
        """This process's claim on the shard (writers commit only while it holds)."""
        if self._claim is None:
            raise SinkError("the DuckDB sink has no claim on its shard: claim_stream first")
        return self._claim

    def writer(self, worker: int) -> DuckDBWriter:
        # A cursor is a connection of its own to the same database: one per worker thread.
        with self._lock:
            return DuckDBWriter(self.con.cursor(), self.claim, self.memory_mb)

    def connect_sql(self) -> DuckSession:
        with self._lock:
            return DuckSession(self.con.cursor())

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.execute("CHECKPOINT")  # leave a compact file, not a long WAL
            self._con.close()
            self._con = None
