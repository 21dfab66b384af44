"""How ``query``, ``report`` and ``tasks`` print a result: a table, CSV or JSON.

- ``table`` (the default, in a terminal or not): rich's table, for eyes. Numbers
  have thousands separators, except in columns that hold years, months or ids
  (:func:`plain_number`): ``order_year`` prints as ``2026``, not ``2,026``.
- ``csv``: the csv module's dialect, a header row, ``\\n`` line ends; NULL is an
  empty field.
- ``json``: one JSON array of objects (column name -> value), one object per
  line, so that ``json.load`` reads it whole and ``grep`` still works on it.

Values are written so that nothing is lost on the way: every JSON number is
one that a double holds exactly (an integer within +-(2**53 - 1), a finite
float); a DECIMAL is a string of its exact digits (``"10.17"``), and so is an
integer past 2**53 (a HUGEINT), a float that is not finite (``"NaN"``) and a
timestamp (ISO 8601, ``"2026-01-02T03:04:05.123456"``, with its offset when it
has one). An interval is an ISO 8601 duration (``"P0DT1H30M0S"``), bytes are
base64, a LIST an array, a STRUCT an object. CSV writes the same strings, and
a nested value as its JSON text.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import json
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

FORMATS = ("table", "csv", "json")
#: The largest integer every JSON reader (a double) holds exactly.
EXACT_INT = 2**53 - 1

# A column of years, months or ids: a name ending in one of those words (order_year,
# ORDER_MONTH, partition_id, id), or a call of YEAR()/MONTH()/EXTRACT(year ...) left unnamed.
_PLAIN = re.compile(
    r"(?:^|[^a-z0-9])(?:year|month|id)$|^(?:year|month)\(|^(?:extract|date_part)\(\W*(?:year|month)\b",
    re.IGNORECASE,
)


def plain_number(column: str) -> bool:
    """Whether a column's numbers print without thousands separators (years, months, ids)."""
    return _PLAIN.search(column.strip()) is not None


def _duration(value: dt.timedelta) -> str:
    sign = "-" if value < dt.timedelta(0) else ""
    value = abs(value)
    hours, rest = divmod(value.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    fraction = f".{value.microseconds:06d}".rstrip("0") if value.microseconds else ""
    return f"{sign}P{value.days}DT{hours}H{minutes}M{seconds}{fraction}S"


def json_value(value: Any) -> Any:
    """One value as JSON, without loss (see the module's docstring)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= EXACT_INT else str(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, Decimal):
        return format(value, "f")  # never an exponent: 1E+2 is "100"
    if isinstance(value, dt.date | dt.time):  # a datetime is a date
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _duration(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {k: json_value(v) for k, v in value.items()}
        return [{"key": json_value(k), "value": json_value(v)} for k, v in value.items()]
    return str(value)  # a UUID, and anything else as the driver prints it


def csv_value(value: Any) -> str:
    """One CSV field: the JSON value as text; NULL empty, booleans true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    out = json_value(value)
    if isinstance(out, list | dict):
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))
    return str(out)  # a str, or a number a double holds (str of a float round-trips)


def _keys(columns: Sequence[str]) -> list[str]:
    """Column names as object keys: a name seen before gets _2, _3, ... (JSON keys are unique)."""
    seen: dict[str, int] = {}
    out = []
    for name in columns:
        n = seen[name] = seen.get(name, 0) + 1
        out.append(name if n == 1 else f"{name}_{n}")
    return out


def write_csv(out: TextIO, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([csv_value(v) for v in r] for r in rows)


def write_json(out: TextIO, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    keys = _keys(columns)
    lines = [
        json.dumps(dict(zip(keys, map(json_value, r), strict=True)), ensure_ascii=False)
        for r in rows
    ]
    out.write("[\n" + ",\n".join(lines) + "\n]\n" if lines else "[]\n")
