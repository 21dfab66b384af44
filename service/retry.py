"""The retry policy: how every remote operation rides through transient failures.

One rule for every remote step of a target (sign-in, the tables, the stream's
state, a worker's connection, a batch, the warehouse layers, a refresh):
retry what the target's classifier calls transient, with jittered exponential
backoff (stamina's loop), within a total time budget per operation
(``CDC_RETRY_TIMEOUT``); anything else (authentication, permissions, SQL
errors, a bug of ours) stops at once, as one :class:`SinkError` line naming
what was being done. Each retry is one warning line (``retry.scheduled``, with
the phase and the attempt) and counts in ``cdc_retries_total{phase}``; an
operation that fails for good counts in ``cdc_errors_total{phase,kind}``.
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import stamina

from . import logs
from .sinks.base import SinkError

T = TypeVar("T")
log = logs.get("retry")


class Phase(enum.StrEnum):
    """What a remote operation is part of (a label on the retry lines and metrics)."""

    SIGNIN = "signin"
    SCHEMA = "schema"
    STREAM = "stream"
    CONNECT = "connect"
    APPLY = "apply"
    LAYERS = "layers"
    REFRESH = "refresh"
    QUERY = "query"


class Observer(Protocol):
    """Counts retries and final failures (the service's metrics)."""

    def retried(self, phase: Phase) -> None: ...

    def failed(self, phase: Phase, kind: str) -> None: ...


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long a transient failure is retried: jittered exponential waits within a budget."""

    timeout: float = 600.0
    wait_initial: float = 0.5
    wait_max: float = 30.0
    wait_jitter: float = 1.0
    observer: Observer | None = None

    def wait(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        base = min(self.wait_max, self.wait_initial * 2.0 ** (attempt - 1))
        return base + random.uniform(0, self.wait_jitter)


def retrying(
    policy: RetryPolicy,
    fn: Callable[[], T],
    doing: str,
    *,
    phase: Phase,
    transient: Callable[[BaseException], bool],
    describe: Callable[[BaseException], str] = logs.one_line,
    terminal: Callable[[BaseException, str], SinkError] | None = None,
) -> T:
    """Run ``fn``, retrying what ``transient`` accepts under ``policy``; anything else stops."""
    started = time.monotonic()
    attempts = 0

    def backoff(exc: Exception) -> bool | float:
        """stamina's hook: False stops, a number is the wait before the next attempt."""
        if isinstance(exc, SinkError) or not transient(exc):
            return False
        wait = policy.wait(attempts)
        if time.monotonic() - started + wait > policy.timeout:
            return False  # the budget would be spent waiting: give up now
        log.warning(
            "retry.scheduled",
            phase=str(phase),
            attempt=attempts,
            wait_s=round(wait, 2),
            error=describe(exc),
            doing=doing,
        )
        if policy.observer is not None:
            policy.observer.retried(phase)
        return wait

    try:
        for attempt in stamina.retry_context(on=backoff, attempts=None, timeout=policy.timeout):
            with attempt:
                attempts = attempt.num
                return fn()
    except Exception as exc:
        gave_up = not isinstance(exc, SinkError) and transient(exc)
        if policy.observer is not None:
            policy.observer.failed(phase, "transient" if gave_up else "terminal")
        if isinstance(exc, SinkError):
            raise
        if gave_up:
            raise SinkError(
                f"{doing}: gave up after {attempts} attempts in "
                f"{time.monotonic() - started:.0f} s (CDC_RETRY_TIMEOUT {policy.timeout:g} s): "
                f"{describe(exc)}"
            ) from None
        if terminal is not None:
            raise terminal(exc, doing) from None
        raise SinkError(f"{doing}: {describe(exc)}") from None
    raise AssertionError("unreachable")  # pragma: no cover


def quiet_stamina() -> None:
    """Our ``retry.scheduled`` line replaces stamina's own (once per process)."""
    stamina.instrumentation.set_on_retry_hooks([])
