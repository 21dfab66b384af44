"""structlog set-up: JSON lines off a terminal, readable console output on one.

Event names are dotted (``sink.batch_committed``) with key/value fields, so a
person can grep them and a log pipeline can index them.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Route structlog (and the stdlib loggers of our libraries) to ``stream`` (stdout)."""
    stream = stream or sys.stdout
    json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json:
        processors += [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
    else:
        processors += [structlog.dev.ConsoleRenderer(colors=stream.isatty())]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the stdlib; keep their chatter out of ours unless it matters.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(name)s %(levelname)s %(message)s"
    )
    for noisy in (
        "snowflake.connector",
        "uvicorn",
        "uvicorn.access",
        "uvicorn.error",
        "aiohttp.access",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get(name: str) -> Any:
    return structlog.get_logger(name)


def one_line(exc: BaseException) -> str:
    """An exception as one log-friendly line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
