"""The retry policy: how a remote operation rides through transient failures.

One rule for every remote operation of a sink: retry what the sink's
classifier calls transient, with jittered exponential backoff (stamina),
within a total time budget; anything else stops the service at once, as one
:class:`SinkError` line naming what was being done.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import stamina

from . import logs
from .sinks.base import SinkError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a transient failure is retried before the service stops (jittered exponential)."""

    attempts: int = 10
    timeout: float = 600.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0


def retrying(
    policy: RetryPolicy,
    fn: Callable[[], T],
    doing: str,
    *,
    transient: Callable[[BaseException], bool],
    describe: Callable[[BaseException], str] = logs.one_line,
    terminal: Callable[[BaseException, str], SinkError] | None = None,
) -> T:
    """Run ``fn``, retrying what ``transient`` accepts under ``policy``; anything else stops."""
    started = time.monotonic()
    attempts = 0
    try:
        for attempt in stamina.retry_context(
            on=transient,
            attempts=policy.attempts,
            timeout=policy.timeout,
            wait_initial=policy.wait_initial,
            wait_max=policy.wait_max,
            wait_jitter=policy.wait_jitter,
        ):
            with attempt:
                attempts = attempt.num
                return fn()
    except Exception as exc:
        if isinstance(exc, SinkError):
            raise
        if transient(exc):
            raise SinkError(
                f"{doing}: gave up after {attempts} attempts in "
                f"{time.monotonic() - started:.0f} s: {describe(exc)}"
            ) from None
        if terminal is not None:
            raise terminal(exc, doing) from None
        raise SinkError(f"{doing}: {describe(exc)}") from None
    raise AssertionError("unreachable")  # pragma: no cover
