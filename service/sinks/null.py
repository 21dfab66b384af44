"""``--target null``: applies nothing, to measure the pipeline itself."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from ..config import Names
from ..pipeline.events import Batch
from .base import Claim, SinkError, SqlSession, StoredStream, Warehouse, Writer

if TYPE_CHECKING:
    from ..retry import Phase

T = TypeVar("T")


class NullWriter:
    retries = 0

    def apply(self, batch: Batch) -> None:
        pass

    def close(self) -> None:
        pass


class NullSink:
    name = "null"
    warehouse = Warehouse.NONE
    keep_sessions = True
    names = Names()

    def __init__(self, shard: str = "0") -> None:
        self.shard = shard

    def open(self) -> None:
        pass

    def load_stream(self) -> StoredStream:
        return StoredStream(None, {})

    def claim_stream(self, identity: str, partitions: int, reset: bool) -> Claim:
        return Claim(self.shard, 1, {}, None)

    def writer(self, worker: int) -> Writer:
        return NullWriter()

    def connect_sql(self, timeout: float | None = None) -> SqlSession:
        raise SinkError("the null target holds no data")

    def run(self, fn: Callable[[SqlSession], T], doing: str, phase: Phase) -> T:
        raise SinkError("the null target holds no data")

    def close(self) -> None:
        pass
