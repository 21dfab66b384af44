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
    # The connector logs errors (with tracebacks) before raising them; the service
    # reports each failure once, as one line, itself.
    logging.getLogger("snowflake.connector").setLevel(logging.CRITICAL)
    for noisy in (
        "uvicorn",
        "uvicorn.access",
        "uvicorn.error",
        "aiohttp.access",
    ):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get(name: str) -> Any:
    return structlog.get_logger(name)


#: A message longer than this is cut (a driver error can carry a megabyte of SQL).
MAX_LINE = 300


def one_line(exc: BaseException) -> str:
    """An exception as one log-friendly line: its type, its code where a database driver
    gives one (errno and SQLSTATE), and the first line of its message."""
    raw = getattr(exc, "raw_msg", None)
    lines = (raw if isinstance(raw, str) else str(exc)).strip().splitlines()
    first = lines[0] if lines else ""
    name = type(exc).__name__
    if hasattr(exc, "sqlstate"):  # a DB-API error of the Snowflake connector
        errno, state = getattr(exc, "errno", None), exc.sqlstate
        code = f"{errno:06d}" if isinstance(errno, int) and errno > 0 else "-"
        name += f" {code}" + (f" ({state})" if state and state != "n/a" else "")
    text = f"{name}: {first}" if first or hasattr(exc, "sqlstate") else name
    return text if len(text) <= MAX_LINE else text[: MAX_LINE - 3] + "..."
