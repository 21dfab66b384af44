"""``--target null``: applies nothing, to measure the pipeline itself."""

from __future__ import annotations

from ..events import Batch
from .base import StoredStream, Writer


class NullWriter:
    retries = 0

    def apply(self, batch: Batch) -> None:
        pass

    def connect_sql(self) -> object:
        from .base import SinkError

        raise SinkError("the null target holds no data")

    def close(self) -> None:
        pass


class NullSink:
    name = "null"
    dialect = "duckdb"
    local_warehouse = True
    names: dict[str, str] = {}  # noqa: RUF012 (read-only)

    def __init__(self, shard: str = "0") -> None:
        self.shard = shard

    def open(self) -> None:
        pass

    def load_stream(self) -> StoredStream:
        return StoredStream(None, {})

    def save_stream(self, identity: str, reset: bool) -> None:
        pass

    def writer(self, worker: int) -> Writer:
        return NullWriter()

    def connect_sql(self) -> object:
        from .base import SinkError

        raise SinkError("the null target holds no data")

    def close(self) -> None:
        pass
