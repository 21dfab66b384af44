"""``verify`` during a run: the service sends one snapshot, the command checks it itself.

``verify`` replays the stream and compares every row, which takes CPU and
memory in proportion to the table. Done inside the service it took both from
the pipeline it watches (measured: verify after verify during a full-speed run
of 3M events held it to 21,000 events/s, every row a Python tuple in the
service; with the snapshot, 240,000). So the service only reads: in one read-only transaction it streams
``cdc_streams``, ``cdc_checkpoints`` and ``raw_orders`` as Arrow record batches
(native code, a batch in memory at a time), and the command loads them into a
DuckDB database in its own memory and runs the very ``verify`` it runs on a
file: same checks, same output.

The stream is a sequence of frames, each a JSON line and, for a batch, the
bytes it announces (an Arrow IPC stream of one record batch):

    {"table": "raw_orders", "bytes": 81234}\\n<81234 bytes>
    {"error": "one line", "exit": 1, "retry": false}\\n
    {"end": true}\\n
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import IO, Any

import pyarrow as pa

from ..config import ConfigError, Names
from ..sinks.base import SinkError, SqlSession, Warehouse
from ..warehouse import layers, sqlfiles
from . import reads

TABLES = ("cdc_streams", "cdc_checkpoints", "raw_orders")
BATCH_ROWS = 100_000
CONTENT_TYPE = "application/x-ecomm-cdc-snapshot"


class Broken(SinkError):
    """The snapshot ended early, or said it failed (``retry``: the service was stopping)."""

    def __init__(self, message: str, retry: bool = False) -> None:
        super().__init__(message)
        self.retry = retry


def frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    return json.dumps(header).encode() + b"\n" + payload


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    return bytes(sink.getvalue())


def export(session: SqlSession, send: Callable[[bytes], object]) -> None:
    """Send the stream tables, one consistent snapshot, a record batch at a time (DuckDB)."""
    con = reads.duck_cursor(session)
    if con is None:
        raise SinkError("a snapshot is taken of a DuckDB target only")
    with reads.read_only_transaction(session):
        for table in TABLES:
            reader = con.sql(f"SELECT * FROM {table}").to_arrow_reader(BATCH_ROWS)  # noqa: S608
            for batch in reader:
                if batch.num_rows:
                    payload = _ipc(batch)
                    send(frame({"table": table, "bytes": len(payload)}, payload))
    send(frame({"end": True}))


def receive(stream: IO[bytes]) -> dict[str, list[pa.RecordBatch]]:
    """The batches of each table, read from ``stream`` to its end frame."""
    found: dict[str, list[pa.RecordBatch]] = {t: [] for t in TABLES}
    while True:
        line = stream.readline()
        if not line.endswith(b"\n"):
            raise Broken("the service's snapshot broke off", retry=True)
        header = json.loads(line)
        if header.get("end"):
            return found
        if "error" in header:
            message, code = str(header["error"]), int(header.get("exit", 1))
            if code == 2:
                setting, _, text = message.partition(": ")
                raise ConfigError(setting, text or message)
            raise Broken(message, retry=bool(header.get("retry")))
        table, size = str(header["table"]), int(header["bytes"])
        payload = stream.read(size)
        if len(payload) != size or table not in found:
            raise Broken("the service's snapshot broke off", retry=True)
        found[table].extend(pa.ipc.open_stream(payload).read_all().to_batches())


def load(tables: dict[str, list[pa.RecordBatch]]) -> SqlSession:
    """A DuckDB database in this process's memory holding the snapshot, and the layers built
    from it as ``run`` builds them: ready for ``verify``."""
    import duckdb

    from ..sinks.duckdb import DuckSession

    con = duckdb.connect(":memory:", config={"enable_external_access": False})
    con.execute("SET TimeZone = 'UTC'")
    session = DuckSession(con)
    for stmt in sqlfiles.statements(sqlfiles.TABLE_FILES, Names(), dialect="duckdb"):
        session.execute(stmt)
    for table, batches in tables.items():
        if batches:
            con.register("cdc_snapshot", pa.Table.from_batches(batches))
            session.execute(f"INSERT INTO {table} BY NAME SELECT * FROM cdc_snapshot")  # noqa: S608
            con.unregister("cdc_snapshot")
    layers.apply_ddl(session, Warehouse.LOCAL, Names())
    return session
