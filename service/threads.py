"""Blocking calls off the event loop, on daemon threads that never hold up the process's exit.

``asyncio.to_thread`` and a ``ThreadPoolExecutor`` are joined when the loop or the
interpreter shuts down: a thread stuck in a driver call (a sign-in to a host that
never answers, a statement on a silent network) would then keep the process alive
past its shutdown deadline. These threads are daemons, and nothing waits for them
once the service has decided to stop waiting.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_STOP = object()


def _settle(future: asyncio.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run ``fn`` and hand its outcome to ``future`` on its loop (if anyone still waits)."""
    loop = future.get_loop()
    try:
        result = fn(*args)
    except BaseException as exc:
        if not loop.is_closed():
            loop.call_soon_threadsafe(_set, future, None, exc)
        return
    if not loop.is_closed():
        loop.call_soon_threadsafe(_set, future, result, None)


def _set(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():  # the waiter gave up (cancelled)
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def run(fn: Callable[..., T], *args: Any, name: str = "cdc-call") -> asyncio.Future[T]:
    """``fn(*args)`` on a new daemon thread; its result as a future of the running loop."""
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    threading.Thread(target=_settle, args=(future, fn, args), name=name, daemon=True).start()
    return future


class Worker:
    """One daemon thread that runs the calls submitted to it, in order (a worker's connection
    lives on it: drivers want a connection used from one thread)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            item = self._calls.get()
            if item is _STOP:
                return
            future, fn, args = item
            _settle(future, fn, args)

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls.put((future, fn, args))
        return future

    def stop(self) -> None:
        """No more calls; the thread ends after the one it is in (nothing waits for it)."""
        self._calls.put(_STOP)
