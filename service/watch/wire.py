"""Typed JSON for query results: what a running service sends, decoded to the driver's values.

JSON has numbers, strings, lists and objects; a result has decimals, timestamps,
big integers, bytes. Each value that JSON cannot carry as itself becomes a
one-key object naming its type (``{"$decimal": "10.17"}``), so the command on
the other end gets back the very values the driver returned and renders them
with the same code as when it reads the file itself. A dict (a DuckDB STRUCT or
MAP) is tagged too, so a tag can never be mistaken for a value.

JavaScript reads the same encoding (``web/dashboard.js``, ``plain()``).
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import Any

JSON = Any  # what json.loads returns


def encode(value: Any) -> JSON:
    """One value as JSON, tagged where JSON has no type of its own."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dt.datetime):  # before date: a datetime is a date
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"$timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"$dict": [[encode(k), encode(v)] for k, v in value.items()]}
    return {"$text": str(value)}  # anything else, as the driver would print it


def _timedelta(parts: list[int]) -> dt.timedelta:
    days, seconds, micros = parts
    return dt.timedelta(days=days, seconds=seconds, microseconds=micros)


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "$float": float,
    "$decimal": Decimal,
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
    "$timedelta": _timedelta,
    "$bytes": base64.b64decode,
    "$uuid": uuid.UUID,
    "$dict": lambda pairs: {decode(k): decode(v) for k, v in pairs},
    "$text": str,
}


def decode(obj: JSON) -> Any:
    """The value :func:`encode` was given (a tuple comes back as a list)."""
    if isinstance(obj, list):
        return [decode(v) for v in obj]
    if isinstance(obj, dict):
        if len(obj) != 1:
            raise ValueError(f"not a tagged value: {sorted(obj)}")
        ((tag, raw),) = obj.items()
        if tag not in _DECODERS:
            raise ValueError(f"unknown value type {tag!r}")
        return _DECODERS[tag](raw)
    return obj


def encode_rows(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, JSON]:
    return {"columns": list(columns), "rows": [[encode(v) for v in r] for r in rows]}


def decode_rows(obj: JSON) -> tuple[list[str], list[tuple[Any, ...]]]:
    return [str(c) for c in obj["columns"]], [tuple(decode(v) for v in r) for r in obj["rows"]]
