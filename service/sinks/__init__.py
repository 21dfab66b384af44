"""Targets the batches are applied to. Every sink implements :class:`base.Sink`."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
    from .base import Sink


def make_sink(config: Config) -> Sink:
    """The sink for the configured target (imports only what that target needs)."""
    target, s = config.target, config.settings
    if target == "duckdb":
        from .duckdb import DuckDBSink

        return DuckDBSink(
            s.duckdb_path,
            s.shard,
            setting=config.name_of("duckdb_path"),
            workers=s.workers,
            memory_mb=s.duckdb_memory_mb,
        )
    if target == "snowflake":
        from .snowflake.sink import SnowflakeSink

        return SnowflakeSink(config)
    if target == "emulator":
        from .emulator import EmulatorSink

        return EmulatorSink(config)
    if target == "null":
        from .null import NullSink

        return NullSink(s.shard)
    from .base import SinkError

    raise SinkError(f"target {target!r} is not available in this build")
