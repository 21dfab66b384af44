"""Wall-clock time, the one way the service reads it: UTC, naive (as TIMESTAMP_NTZ stores it)."""

from __future__ import annotations

import datetime as dt

#: Epoch seconds 0 as a naive UTC datetime.
EPOCH = dt.datetime(1970, 1, 1)


def utc_now() -> dt.datetime:
    """Now, in UTC, without a time zone (the columns are TIMESTAMP_NTZ holding UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def from_epoch(seconds: int) -> dt.datetime:
    """Epoch seconds as a naive UTC datetime."""
    return EPOCH + dt.timedelta(seconds=seconds)


def to_epoch(when: dt.datetime) -> int:
    """A datetime (naive = UTC) as epoch seconds."""
    return int((when.replace(tzinfo=None) - EPOCH).total_seconds())


def iso(seconds: int) -> str:
    """Epoch seconds as ``YYYY-MM-DDTHH:MM:SS`` (UTC)."""
    return from_epoch(seconds).strftime("%Y-%m-%dT%H:%M:%S")
