"""Targets the batches are applied to. Every sink implements :class:`base.Sink`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from ..retry import Observer
    from .base import Sink


def make_sink(config: Config, observer: Observer | None = None) -> Sink:
    """The sink for the configured target (imports only what that target needs).

    ``observer`` counts the retries of a remote target (the service's metrics).
    """
    target, s = config.target, config.settings
    if target == "duckdb":
        from .duckdb import DuckDBSink

        return DuckDBSink(
            s.duckdb_path,
            s.shard,
            setting=config.name_of("duckdb_path"),
            workers=s.workers,
            memory_mb=s.duckdb_memory_mb,
            reopen_events=s.duckdb_reopen_events,
        )
    if target == "snowflake":
        from .snowflake.sink import SnowflakeSink

        return SnowflakeSink(config, observer=observer)
    if target == "emulator":
        from .emulator import EmulatorSink

        return EmulatorSink(config, observer=observer)
    if target == "kafka":
        from .kafka import KafkaSink

        return KafkaSink(config)
    if target == "null":
        from .null import NullSink

        return NullSink(s.shard)
    from .base import SinkError

    raise SinkError(f"target {target!r} is not available in this build")
