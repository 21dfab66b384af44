"""The embedded default: a DuckDB file, written through Arrow (bulk paths only).

Each batch is one transaction on the worker's own cursor, from one Arrow table
of its net rows: one ``DELETE ... IN (SELECT ...)`` of the orders it updates or
deletes, one ``INSERT ... SELECT`` of the new images (inserts and updates), and
the checkpoint UPDATE of :mod:`service.pipeline.checkpoint`. Tables come from ``sql/``,
translated from Snowflake's dialect.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .. import clock, logs
from ..config import Names
from ..pipeline import checkpoint
from ..pipeline.events import ORDER_DIGITS, STATUSES, Batch, Changes, Op, customer_id, product_id
from ..warehouse import schema, sqlfiles
from .base import (
    Claim,
    Dialect,
    SinkError,
    SqlSession,
    StoredStream,
    TargetConfigError,
    Warehouse,
    transaction,
)

if TYPE_CHECKING:
    from ..retry import Phase

T = TypeVar("T")
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
#: The orders the batch touched, for the local refresh to follow (service/warehouse/deltas.py).
_TOUCHED = "INSERT INTO cdc_changed_orders SELECT order_id FROM cdc_batch"
#: The range lets DuckDB skip every row group outside it (zone maps): only the
#: recent end of the table is scanned, however long the table grows.
_GONE = """
DELETE FROM raw_orders
WHERE order_id BETWEEN ? AND ?
  AND order_id IN (SELECT order_id FROM cdc_batch WHERE op <> 1)
"""
#: WAL size past which a writer forces a checkpoint after its commit. DuckDB's
#: own automatic checkpoint needs a moment with no other transaction open, which
#: four writers almost never leave it: the WAL then grew past 600 MB, and with it
#: the version info of every row not yet checkpointed, memory DuckDB cannot spill
#: (about 13 bytes per row): at 64 MB the run died of "failed to pin block" at
#: 4-9M events. Forced every 16 MB, a checkpoint takes 0.25-0.4 s however large
#: the table, aborts nothing, and DuckDB stays within 64 MB over 30M events.
_WAL_LIMIT = 16 * 2**20
#: DuckDB's memory limit (by default it would take 80 % of RAM): a floor, plus
#: some per worker, since each open transaction pins blocks of its own. Measured
#: with 64-event batches: at a flat 64 MB, 16 workers ran out of memory in 1 of 3
#: runs (and in 5 of 7 in a review); at 48 + 4 x 16 = 112 MB, 6 of 6 passed; 1-32
#: workers with 64-event batches and 2-16 workers with 20,000-200,000-event
#: batches ran through. Data beyond the limit lives in the file.
_MEMORY_PER_WORKER_MB = 4
_MEMORY_FLOOR_MB = 48
#: What a refresh of the layers adds to the limit while it runs. A full rebuild (tens of
#: millions of rows: hash aggregates by customer and month) beside four writers ran out of
#: the writers' 64 MB: 3 of 8 refreshes FAILED over 90M events, and a writer that then
#: could not get a block ended the run at 84.6M events (exit 1).
REFRESH_HEADROOM_MB = 64
#: The service's database never reaches outside its file: no extension is
#: downloaded, installed or loaded on demand, and SQL cannot read or write
#: other files (read_csv, COPY, ATTACH) — a query from outside runs with the same rules.
_CONFIG = {
    "autoinstall_known_extensions": False,
    "autoload_known_extensions": False,
    "enable_external_access": False,
    # Nothing here reads rows in the order they were written without an ORDER BY; keeping
    # that order makes a parallel CREATE TABLE AS buffer rows. Off, the full rebuild of the
    # layers at 49.5 million rows took 27 s instead of 47 s within the 64 MB default, and
    # wrote the same rows.
    "preserve_insertion_order": False,
}
#: A DuckDB database file carries this at bytes 8..12.
_MAGIC = b"DUCK"


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


class FileInUse(SinkError):
    """Another process holds the file (DuckDB allows one): perhaps a running service."""


def _refuse_foreign_file(path: Path, setting: str) -> None:
    """A file that is not a DuckDB database (SQLite, text, anything) is refused unopened."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise TargetConfigError(setting, f"cannot read {path}: {exc.strerror}") from None
    if not head or head[8:12] == _MAGIC:
        return
    what = "a SQLite database" if head.startswith(b"SQLite format 3") else "not a DuckDB database"
    raise TargetConfigError(
        setting, f"{path} is {what}: nothing was changed. Point it at a DuckDB file of ecomm-cdc's"
    )


def _refuse_foreign_tables(session: SqlSession, path: Path, setting: str) -> None:
    """Another program's DuckDB database: tables, but none of ecomm-cdc's stream tables."""
    tables = schema.found(session)
    if tables and "cdc_streams" not in tables:
        listed = ", ".join(sorted(tables)[:6]) + (", ..." if len(tables) > 6 else "")
        raise TargetConfigError(
            setting,
            f"{path} holds another program's tables ({listed}), not an ecomm-cdc stream: "
            "nothing was changed. Point it at a file of its own",
        )
    schema.check(session, str(path), setting)


#: A batch applied again (see :class:`_Undecided`): every order it touches, its inserts too.
_AGAIN = """
DELETE FROM raw_orders
WHERE order_id BETWEEN ? AND ?
  AND order_id IN (SELECT order_id FROM cdc_batch)
"""
#: Attempts at a ROLLBACK that failed (out of memory: it may pass once a moment has freed some).
_ROLLBACK_TRIES = 5


def row_statements(
    batch: Batch, table: pa.Table, *, again: bool = False
) -> list[tuple[str, list[Any]]]:
    """What puts a batch's net effect in raw_orders, ``table`` registered as ``cdc_batch``:
    the ranged DELETE of the orders it updates or deletes (``again``: of every order it
    touches), then the INSERT of the new images. The writer adds the change log and the
    checkpoint; ``bench``'s bare yardstick runs these alone."""
    out: list[tuple[str, list[Any]]] = []
    ids = table.column("order_id")
    gone = ids if again else ids.filter(pa.array(batch.rows.op != Op.INSERT))
    if len(gone):
        # The range of the ids as text (an 11-digit number sorts below a
        # 10-digit one): the bounds of the strings, not of the numbers.
        bounds = pc.min_max(gone)
        out.append((_AGAIN if again else _GONE, [bounds["min"].as_py(), bounds["max"].as_py()]))
    sizes = batch.sizes()
    if sizes[Op.INSERT] or sizes[Op.UPDATE]:
        out.append((_ROWS, []))
    return out


def _write(
    session: SqlSession, claim: Claim, batch: Batch, table: pa.Table, *, again: bool = False
) -> None:
    """A batch's statements in the open transaction, ``table`` registered as ``cdc_batch``.

    ``again``: over whatever part of the batch the file may already hold, so every order it
    touches is deleted first (its inserts too), and its checkpoints may read as its own.
    """
    for sql, params in row_statements(batch, table, again=again):
        session.execute(sql, params)
    session.execute(_TOUCHED)
    sql, params = checkpoint.advance(
        claim.shard, claim.epoch, batch.checkpoints, clock.utc_now(), again=again
    )
    changed = session.changed(sql, params)
    checkpoint.advanced(session, claim.shard, claim.epoch, changed, len(batch.checkpoints))


def _rolled_back(session: SqlSession) -> bool:
    """ROLLBACK the open transaction; False when it could not be (out of memory each time)."""
    for attempt in range(_ROLLBACK_TRIES):
        try:
            session.rollback()
            return True
        except duckdb.Error as exc:
            if "no transaction is active" in str(exc):
                return True  # the error being raised ended it
            time.sleep(0.05 * (attempt + 1))
    return False


@dataclass(frozen=True, slots=True)
class _Undecided:
    """A batch whose COMMIT (or ROLLBACK) failed: what the file ends up holding of it is not
    known until the database has been closed.

    Seen with DuckDB 2.0.1 at a 32 MB limit: ``COMMIT`` fails ("Failed to commit: failed to
    pin block"), the cursor has no transaction any more and other sessions read the batch
    as rolled back, yet the transaction stays active inside DuckDB (its rows cannot be
    deleted by another: "Conflict on tuple deletion!"; CHECKPOINT: "other write
    transactions active"), and its checkpoint UPDATE reaches the file (through the WAL, or
    the checkpoint at shutdown) without its rows: the next run would resume past rows that
    were never written. So :meth:`DuckDBSink.close` applies such a batch again once the
    database is closed, in a new one: idempotently, over whatever part of it the file holds.
    """

    batch: Batch
    claim: Claim


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


class _Checkpointer:
    """Forces a checkpoint once the WAL has grown past ``_WAL_LIMIT`` (one writer at a time)."""

    def __init__(self, path: Path) -> None:
        self._wal = Path(f"{path}.wal")
        self._busy = threading.Lock()
        self.forced = 0

    def after_commit(self, con: duckdb.DuckDBPyConnection) -> None:
        try:
            if self._wal.stat().st_size < _WAL_LIMIT:
                return
        except FileNotFoundError:
            return
        if not self._busy.acquire(blocking=False):
            return  # another writer is at it
        try:
            con.execute("FORCE CHECKPOINT")
            self.forced += 1
        finally:
            self._busy.release()


#: Events committed after which the sink closes and reopens its database (see
#: :meth:`DuckDBSink.reopen`): DuckDB keeps, for as long as the database is open, a record
#: of every row this process deleted (an update is a delete and an insert); no CHECKPOINT
#: frees it, closing does. 5M events: about 7 hours at 200 events/s, 30 s at the bench's pace.
REOPEN_EVENTS = 5_000_000
#: How long a reopen waits for the connections in use to be put down before giving up
#: (for now: it tries again a tenth of REOPEN_EVENTS later).
_REOPEN_WAIT = 2.0


class _Gate:
    """Shared holds (a batch, a session) and one exclusive turn (a reopen), which new holds
    wait for while it is pending: bounded by the exclusive side's timeout."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holds = 0
        self._pending = False

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def enter(self) -> None:
        with self._cond:
            self._cond.wait_for(lambda: not self._pending)
            self._holds += 1

    def leave(self) -> None:
        with self._cond:
            self._holds -= 1
            self._cond.notify_all()

    def exclusive(self, timeout: float) -> bool:
        """True: no hold is left and none will start until :meth:`release`."""
        with self._cond:
            if self._pending:
                return False
            self._pending = True
            if self._cond.wait_for(lambda: self._holds == 0, timeout):
                return True
            self._pending = False
            self._cond.notify_all()
            return False

    def release(self) -> None:
        with self._cond:
            self._pending = False
            self._cond.notify_all()


class _HeldSession(DuckSession):
    """A session that holds the sink's gate from its creation to its close."""

    def __init__(self, con: duckdb.DuckDBPyConnection, gate: _Gate) -> None:
        super().__init__(con)
        self._gate: _Gate | None = gate

    def close(self) -> None:
        try:
            super().close()
        finally:
            gate, self._gate = self._gate, None
            if gate is not None:
                gate.leave()


class DuckDBWriter:
    retries = 0  # a local file: nothing is retried

    def __init__(self, sink: DuckDBSink) -> None:
        #: The sink whose database may be reopened between batches: its claim, its limits,
        #: where a batch whose outcome is unknown goes (the sink's close settles it).
        self._sink = sink
        self._claim = sink.claim
        self._generation = sink.generation
        self._session = DuckSession(sink.cursor())  # one cursor per worker thread

    def apply(self, batch: Batch) -> None:
        sink = self._sink
        with sink.gate.hold():
            if self._generation != sink.generation:  # the database was reopened
                with contextlib.suppress(duckdb.Error):
                    self._session.close()
                self._session = DuckSession(sink.cursor())
                self._generation = sink.generation
            self._checked(batch)
        sink.committed(sum(batch.counts.values()))

    def _checked(self, batch: Batch) -> None:
        try:
            self._apply(batch)
        except duckdb.Error as exc:
            # Out of memory shows up as more than one exception type (an
            # OutOfMemoryException, a commit that "failed to pin block", ...).
            if _out_of_memory(exc):
                raise SinkError(
                    f"DuckDB ran out of its {self._sink.memory_mb} MB memory limit "
                    f"(CDC_DUCKDB_MEMORY_MB raises it): {logs.one_line(exc)}"
                ) from None
            raise

    def _apply(self, batch: Batch) -> None:
        session, rows = self._session, batch.rows
        table = batch_table(rows)
        session.con.register("cdc_batch", table)
        try:
            session.begin()
            try:
                _write(session, self._claim, batch, table)
            except BaseException:
                if not _rolled_back(session):
                    self._sink.undecided(_Undecided(batch, self._claim))
                raise
            try:
                session.commit()
            except BaseException:
                # Undecided: DuckDB 2.0 may keep a transaction whose COMMIT failed (out of
                # memory) and put part of it in the file later (see _Undecided).
                self._sink.undecided(_Undecided(batch, self._claim))
                raise
        finally:
            # Never in place of the error that is being raised (a cursor whose
            # ROLLBACK failed refuses even this).
            with contextlib.suppress(duckdb.Error):
                session.con.unregister("cdc_batch")
        self._sink.checkpointer.after_commit(session.con)

    def close(self) -> None:
        self._session.close()


class DuckDBSink:
    """A DuckDB file. One process at a time (DuckDB locks the file)."""

    name = "duckdb"
    warehouse = Warehouse.LOCAL
    keep_sessions = False  # a session costs nothing to open; a held one postpones a reopen
    names = Names()

    def __init__(
        self,
        path: Path,
        shard: str = "0",
        setting: str = "CDC_DUCKDB_PATH",
        workers: int = 4,
        memory_mb: int | None = None,
        reopen_events: int | None = None,
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
        self.checkpointer = _Checkpointer(path)
        self._refreshing = 0  # refreshes running (the limit is raised while any is)
        #: Batches whose COMMIT or ROLLBACK failed, applied again once the database is closed.
        self._undecided: list[_Undecided] = []
        #: Batches and sessions hold it; a reopen takes it alone.
        self.gate = _Gate()
        #: How many times the database was opened (writers take a new cursor when it moves).
        self.generation = 0
        self.reopen_events = REOPEN_EVENTS if reopen_events is None else reopen_events
        self._cursors: list[duckdb.DuckDBPyConnection] = []  # the writers' (closed by a reopen)
        self._since_open = 0  # events committed since the database was opened
        self._next_reopen = self.reopen_events
        self.reopened = 0

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
        _refuse_foreign_file(path, self._setting)
        if path.exists() and path.stat().st_size:
            # Look before touching: another program's database is refused unchanged.
            with contextlib.closing(self._connect(read_only=True)) as con:
                _refuse_foreign_tables(DuckSession(con), path, self._setting)
        con = self._con = self._configured(self._connect(read_only=False))
        with transaction(DuckSession(con)) as session:
            for stmt in sqlfiles.statements(sqlfiles.TABLE_FILES, self.names, dialect="duckdb"):
                session.execute(stmt)
            for stmt in sqlfiles.local_ddl("duckdb"):  # the change log of the local refresh
                session.execute(stmt)

    def _configured(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"SET checkpoint_threshold = '{_WAL_LIMIT // 2**20}MB'")
        con.execute(f"SET memory_limit = '{int(self.memory_mb)}MB'")
        return con

    def _connect(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        path = self.path
        try:
            return duckdb.connect(str(path), read_only=read_only, config=dict(_CONFIG))
        except duckdb.IOException as exc:
            text = logs.one_line(exc)
            if "lock" in text.lower():
                raise FileInUse(f"{path} is in use by another process ({text})") from None
            raise TargetConfigError(
                self._setting, f"cannot open {path}: truncated or damaged ({text})"
            ) from None
        except duckdb.Error as exc:
            raise TargetConfigError(
                self._setting, f"cannot open {path}: {logs.one_line(exc)}"
            ) from None

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise SinkError("the DuckDB sink is not open")
        return self._con

    def load_stream(self) -> StoredStream:
        return checkpoint.load(DuckSession(self.con), self.shard)

    def claim_stream(self, identity: str, partitions: int, reset: bool) -> Claim:
        with transaction(DuckSession(self.con)) as session:
            epoch, previous = checkpoint.record(
                session, self.shard, identity, partitions, reset, checkpoint.this_writer()
            )
        with transaction(DuckSession(self.con)) as session:
            self._claim = checkpoint.stamp(session, self.shard, epoch, previous)
        return self._claim

    @property
    def claim(self) -> Claim:
        """This process's claim on the shard (writers commit only while it holds)."""
        if self._claim is None:
            raise SinkError("the DuckDB sink has no claim on its shard: claim_stream first")
        return self._claim

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A writer's cursor (a connection of its own to the same database), closed by a reopen."""
        with self._lock:
            cur = self.con.cursor()
            self._cursors.append(cur)
            return cur

    def writer(self, worker: int) -> DuckDBWriter:
        return DuckDBWriter(self)

    def undecided(self, batch: _Undecided) -> None:
        """A writer's batch whose COMMIT (or ROLLBACK) failed: settled by :meth:`close`."""
        with self._lock:
            self._undecided.append(batch)

    def connect_sql(self, timeout: float | None = None) -> DuckSession:
        """A session on a cursor of its own; the database is not reopened while it is open."""
        self.gate.enter()
        try:
            with self._lock:
                return _HeldSession(self.con.cursor(), self.gate)
        except BaseException:
            self.gate.leave()
            raise

    def run(self, fn: Callable[[SqlSession], T], doing: str, phase: Phase) -> T:
        """A local file: nothing to retry. A refresh runs with :data:`REFRESH_HEADROOM_MB`
        more memory than the writers' limit."""
        from ..retry import Phase

        with contextlib.ExitStack() as stack:
            session = stack.enter_context(contextlib.closing(self.connect_sql()))
            if phase is Phase.REFRESH:
                stack.enter_context(self._headroom())
            return fn(session)

    def committed(self, events: int) -> None:
        """A writer's batch committed: reopen the database once REOPEN_EVENTS have been."""
        with self._lock:
            self._since_open += events
            due = self.reopen_events > 0 and self._since_open >= self._next_reopen
        if due:
            self.reopen()

    def reopen(self) -> bool:
        """Close the database and open it again, between batches, to give back what DuckDB
        keeps for an open database (see :data:`REOPEN_EVENTS`). Waits up to _REOPEN_WAIT for
        the batches and sessions in flight to end (new ones wait for it); gives up otherwise
        (a refresh or a long query holds a session), and tries again later. True: reopened."""
        log = logs.get("sink")
        if self._refreshing or self._undecided or not self.gate.exclusive(_REOPEN_WAIT):
            with self._lock:
                self._next_reopen = self._since_open + max(1, self.reopen_events // 10)
            log.debug("sink.reopen_postponed", events_since_open=self._since_open)
            return False
        try:
            t0 = time.perf_counter()
            with self._lock:
                for cur in self._cursors:
                    with contextlib.suppress(duckdb.Error):
                        cur.close()
                self._cursors.clear()
                con, self._con = self.con, None
                with contextlib.suppress(duckdb.Error):
                    con.execute("CHECKPOINT")
                con.close()
                self._con = self._configured(self._connect(read_only=False))
                self.generation += 1
                self.reopened += 1
                events, self._since_open = self._since_open, 0
                self._next_reopen = self.reopen_events
            log.info(
                "sink.reopened",
                events_since_open=events,
                seconds=round(time.perf_counter() - t0, 3),
                reason="DuckDB frees what it keeps of an open database's deletes only on close",
            )
            return True
        finally:
            self.gate.release()

    @contextlib.contextmanager
    def _headroom(self) -> Iterator[None]:
        """The limit raised by REFRESH_HEADROOM_MB while any refresh runs (DuckDB's limit is
        the database's, shared by every connection), then put back."""
        con = self.con
        with self._lock:
            self._refreshing += 1
            if self._refreshing == 1:
                con.execute(f"SET memory_limit = '{self.memory_mb + REFRESH_HEADROOM_MB}MB'")
        try:
            yield
        finally:
            with self._lock:
                self._refreshing -= 1
                if self._refreshing == 0 and self._con is not None:
                    with contextlib.suppress(duckdb.Error):
                        self._con.execute(f"SET memory_limit = '{int(self.memory_mb)}MB'")

    def close(self) -> None:
        if self._con is not None:
            with contextlib.suppress(duckdb.Error):
                self._con.execute("CHECKPOINT")  # leave a compact file, not a long WAL
            self._con.close()
            self._con = None
        if self._undecided:
            self._settle()

    def _settle(self) -> None:
        """Apply the undecided batches again, in a database opened anew (the old one may
        hold their transactions still): each one's rows and checkpoints, or raise."""
        undecided, self._undecided = self._undecided, []
        log = logs.get("sink")
        try:
            with contextlib.closing(self._connect(read_only=False)) as con:
                con.execute("SET TimeZone = 'UTC'")  # no memory limit: a few batches
                session = DuckSession(con)
                for u in undecided:
                    table = batch_table(u.batch.rows)
                    con.register("cdc_batch", table)
                    try:
                        with transaction(session):
                            _write(session, u.claim, u.batch, table, again=True)
                    finally:
                        con.unregister("cdc_batch")
                    log.warning(
                        "sink.batch_settled",
                        last_seq=u.batch.last_seq,
                        reason="its commit failed: applied again, rows and checkpoints",
                    )
                con.execute("CHECKPOINT")
        except duckdb.Error as exc:
            raise SinkError(
                f"{len(undecided)} batch(es) whose commit failed could not be applied again: "
                f"{logs.one_line(exc)}; the file may hold checkpoints ahead of its rows"
            ) from None
