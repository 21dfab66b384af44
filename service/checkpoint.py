"""Which stream a run continues, and where each partition resumes.

A target records the identity of the stream its shard holds (seed, start,
generator settings, partitions) beside the per-partition checkpoints. A run
fills in what it was not told from that record, so "the same command again"
resumes the same stream even when ``--start`` defaulted to "now"; what it was
told must agree with the record, or the run is refused (unless ``--reset``).
"""

from __future__ import annotations

import datetime as dt
import json

from .config import Config
from .generator import GENERATOR_VERSION, GeneratorSettings, StreamIdentity
from .sinks.base import StoredStream

DEFAULT_SEED = 42


class StreamMismatch(Exception):
    """The target holds another stream than the one asked for (a usage error: exit 2)."""


def _fmt(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def resolve(config: Config, stored: StoredStream, now: dt.datetime | None = None) -> StreamIdentity:
    """The identity this run writes, given what the target holds."""
    s, explicit = config.settings, config.explicit
    old = json.loads(stored.identity) if stored.identity and not s.reset else None

    def pick(field: str, given: object, default: object) -> object:
        if field in explicit or old is None:
            return given if field in explicit else default
        return old[field]

    now = now or dt.datetime.now(dt.UTC)
    start_default = int(now.replace(microsecond=0).timestamp())
    start = int(s.start.timestamp()) if s.start is not None else start_default
    identity = StreamIdentity(
        seed=int(pick("seed", s.seed, DEFAULT_SEED)),  # type: ignore[call-overload]
        start=int(pick("start", start, start_default)),  # type: ignore[call-overload]
        shard=s.shard,
        partitions=int(pick("partitions", s.partitions, s.partitions)),  # type: ignore[call-overload]
        generator=GeneratorSettings(),
    )
    if old is not None and old != identity.as_dict():
        raise StreamMismatch(_difference(old, identity.as_dict()))
    return identity


def _difference(old: dict[str, object], new: dict[str, object]) -> str:
    diffs = []
    for key in ("version", "seed", "start", "partitions", "generator"):
        if old.get(key) != new.get(key):
            a, b = old.get(key), new.get(key)
            if key == "start":
                a, b = _fmt(int(a)), _fmt(int(b))  # type: ignore[call-overload]
            if key == "version":
                a = f"generator v{a}"
                b = f"generator v{GENERATOR_VERSION}"
            diffs.append(f"{key} {a} (stored) != {b} (asked)")
    return (
        f"the target already holds another stream for shard {new['shard']!r}: "
        + "; ".join(diffs)
        + ". Run with the stored settings to resume it, or add --reset to drop it and start this one"
    )
