"""Where the producer gets its events: the generator in this process, or in a child process.

Generating an event costs more than everything else the service does with it,
so an unthrottled run generates in a child process and the producer coroutine
receives pickled blocks of plain tuples over a pipe: two cores instead of one.
The generator is pure, so the child yields exactly the events the in-process
generator would. A full pipe blocks the child (backpressure all the way back);
the child ignores SIGINT/SIGTERM (shutdown is the parent's to order), and it
exits as soon as the parent closes the pipe or dies.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import pickle
import signal
import threading
from multiprocessing.connection import Connection
from typing import Any, Protocol

from .events import Event, Op
from .generator import OrderStream, StreamIdentity, as_event

#: Events per message from the child: big enough that the pipe and pickling
#: cost little per event.
BLOCK = 4096


class GeneratorDied(Exception):
    """The generator process ended before the stream did."""


class Source(Protocol):
    #: Sequence number of the last event handed out.
    seq: int
    #: Events handed out so far, by operation.
    counts: dict[Op, int]

    async def take(self, n: int) -> list[Event]: ...

    def close(self) -> None: ...


class InProcessSource:
    """The generator on the event loop's thread (throttled or small runs)."""

    def __init__(self, identity: StreamIdentity) -> None:
        self._stream = OrderStream(identity)
        self.counts = self._stream.counts

    @property
    def seq(self) -> int:
        return self._stream.seq

    async def take(self, n: int) -> list[Event]:
        return self._stream.take(n)

    def close(self) -> None:
        pass


def _serve(identity: StreamIdentity, conn: Connection, limit: int | None) -> None:
    """The child: generate blocks and send them until the limit or a closed pipe."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stream = OrderStream(identity)
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    try:
        while True:
            n = BLOCK if limit is None else min(BLOCK, limit - stream.seq)
            if n <= 0:
                break
            conn.send_bytes(pickle.dumps(stream.take_tuples(n), protocol=pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
        pass  # the parent is gone or done with us
    finally:
        conn.close()


def _read(conn: Connection) -> list[Event]:
    # The bytes come from our own child over a private pipe, never from outside.
    return list(map(as_event, pickle.loads(conn.recv_bytes())))  # noqa: S301


class ProcessSource:
    """The generator in a child process; a reader thread keeps a few blocks ready."""

    AHEAD = 4  # blocks buffered in this process (~1 MB each)

    def __init__(self, identity: StreamIdentity, limit: int | None) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_end = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(
            target=_serve, args=(identity, child_end, limit), name="cdc-generator", daemon=True
        )
        self._proc.start()
        child_end.close()
        self._blocks: asyncio.Queue[list[Event] | None] | None = None
        self._reader: threading.Thread | None = None
        self._room = threading.Semaphore(self.AHEAD)
        self._closing = False
        self._buf: list[Event] = []
        self._pos = 0
        self.seq = 0
        self.counts = {Op.INSERT: 0, Op.UPDATE: 0, Op.DELETE: 0}

    def _read_loop(self, loop: asyncio.AbstractEventLoop, blocks: asyncio.Queue[Any]) -> None:
        """Read blocks as they come, holding at most ``AHEAD`` unconsumed."""
        while True:
            self._room.acquire()
            if self._closing:
                return
            try:
                block: list[Event] | None = _read(self._conn)
            except (EOFError, OSError):
                block = None  # the child is done, or gone
            try:
                loop.call_soon_threadsafe(blocks.put_nowait, block)
            except RuntimeError:
                return  # the loop is closed
            if block is None:
                return

    async def _block(self) -> list[Event]:
        if self._blocks is None:
            self._blocks = asyncio.Queue()
            self._reader = threading.Thread(
                target=self._read_loop,
                args=(asyncio.get_running_loop(), self._blocks),
                name="cdc-generator-reader",
                daemon=True,
            )
            self._reader.start()
        block = await self._blocks.get()
        self._room.release()
        if block is None:
            self._proc.join(1)
            raise GeneratorDied(
                f"the generator process ended early (exit code {self._proc.exitcode})"
            )
        return block

    async def take(self, n: int) -> list[Event]:
        out: list[Event] = []
        while len(out) < n:
            if self._pos >= len(self._buf):
                self._buf, self._pos = await self._block(), 0
            k = min(n - len(out), len(self._buf) - self._pos)
            out += self._buf[self._pos : self._pos + k]
            self._pos += k
        self.seq = out[-1][0] if out else self.seq
        ops = [ev[1] for ev in out]
        for op in self.counts:
            self.counts[op] += ops.count(op)
        return out

    def close(self) -> None:
        """Stop the child; the reader thread ends with the pipe."""
        self._closing = True
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(5)
        self._room.release()  # a reader waiting for room wakes up and sees _closing
        if self._reader is not None:
            self._reader.join(2)
        self._conn.close()


def make_source(identity: StreamIdentity, events: int | None, rate: float, mode: str) -> Any:
    """A child process for unthrottled runs of some length (``auto``), or as configured."""
    use_process = mode == "on" or (
        mode == "auto" and rate == 0 and (events is None or events >= 100_000)
    )
    if use_process:
        return ProcessSource(identity, events)
    return InProcessSource(identity)
