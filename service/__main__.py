"""The command line: ``ecomm-cdc run|bench|...``.

Exit codes: 0 success; 1 a runtime failure (the target failed, a stage
crashed, the drain was abandoned); 2 bad configuration or usage. Every
failure is one line, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from . import logs, retry
from .config import TARGETS, Config, ConfigError, load
from .formats import FORMATS
from .pipeline.checkpoint import StreamMismatch
from .sinks.base import SinkError, TargetConfigError

EXIT_OK, EXIT_RUNTIME, EXIT_CONFIG = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message}\n")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    """Flags of ``run``. Each has a ``CDC_<NAME>`` variable; the flag wins."""
    _add_target_flags(p)
    a = p.add_argument
    a("--events", help="stop after this many events of the stream [CDC_EVENTS]")
    a("--duration", help="stop after this many seconds [CDC_DURATION]")
    a(
        "--rate",
        help="events per second (the mean a --traffic profile multiplies), 0 = as fast as "
        "possible [CDC_RATE]",
    )
    a("--seed", help="stream seed [CDC_SEED]")
    a(
        "--traffic",
        help="traffic profile: steady (default), diurnal, flash-sale, or a TOML file [CDC_TRAFFIC]",
    )
    a(
        "--time-scale",
        help="the simulated clock runs N times faster than the wall clock (default 1 "
        "under a profile) [CDC_TIME_SCALE]",
    )
    a("--start", help="simulated clock start, e.g. 2026-01-01T00:00:00 (UTC) [CDC_START]")
    a("--workers", help="consumer coroutines (default 4) [CDC_WORKERS]")
    a("--batch-size", help="events per batch at most (default 5000) [CDC_BATCH_SIZE]")
    a(
        "--flush-interval",
        help="seconds before a partial batch is applied (default 1.0) [CDC_FLUSH_INTERVAL]",
    )
    a(
        "--queue-size",
        help="events queued before the producer waits (default 10000) [CDC_QUEUE_SIZE]",
    )
    a(
        "--reset",
        action="store_true",
        default=None,
        help="drop the stream the target holds and start this one",
    )
    a("--http-port", help="health and metrics port, 0 = off (default 8080) [CDC_HTTP_PORT]")
    a(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on for a bounded run in a terminal)",
    )


def _add_target_flags(p: argparse.ArgumentParser) -> None:
    """Flags that say which target to talk to (every command has them)."""
    a = p.add_argument
    a("--target", choices=TARGETS, help="duckdb, snowflake, emulator, null or kafka [CDC_TARGET]")
    a(
        "--kafka-bootstrap-servers",
        help="kafka target: the brokers, host:port[,...] [CDC_KAFKA_BOOTSTRAP_SERVERS]",
    )
    a(
        "--kafka-topic",
        help="kafka target: the topic (default ecomm.public.raw_orders) [CDC_KAFKA_TOPIC]",
    )
    a(
        "--duckdb-path",
        help="the embedded default's file (default data/ecomm.duckdb) [CDC_DUCKDB_PATH]",
    )
    a("--shard", help="this replica's shard, part of every order id (default 0) [CDC_SHARD]")
    a("--log-format", help="auto, json or console [CDC_LOG_FORMAT]")
    a("--log-level", help="debug, info, warning or error [CDC_LOG_LEVEL]")
    a("--credentials", help="snowflake_credentials.json of the original project [CDC_CREDENTIALS]")
    a("--connection", help="a connection name in the connector's connections.toml [CDC_CONNECTION]")


def _add_format_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="table (default, in a terminal or not), csv (a header row) or json (an array of "
        "objects): see docs/queries.md",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ecomm-cdc", description="Stream e-commerce order changes into Snowflake."
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="generate the stream and apply it to the target")
    _add_run_flags(run)
    init = sub.add_parser(
        "init", help="create the tables, dynamic tables and task on the target (idempotent)"
    )
    init.add_argument(
        "--upgrade",
        action="store_true",
        help="Snowflake: recreate the layers an earlier version made (FULL dynamic tables)",
    )
    _add_target_flags(init)
    emulator = sub.add_parser(
        "emulator",
        help="serve the Snowflake emulator until stopped (point --target snowflake at it)",
    )
    emulator.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emulator.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    emulator.add_argument(
        "--emulator-path", help="keep its database in this folder [CDC_EMULATOR_PATH]"
    )
    emulator.add_argument(
        "--no-execute-task",
        action="store_true",
        help="play a role without the EXECUTE TASK privilege (ALTER TASK ... RESUME is refused)",
    )
    emulator.add_argument(
        "--task-speed", type=float, default=1.0, help="run task schedules this many times faster"
    )
    for name, text in (
        ("refresh", "refresh the derived and aggregated tables now"),
        ("report", "print orders_aggregated as a table"),
        ("tasks", "print the refresh task's history"),
        ("verify", "check the target against the replay of its stream"),
    ):
        command = sub.add_parser(name, help=text)
        _add_target_flags(command)
        if name in ("report", "tasks"):
            _add_format_flag(command)
    query = sub.add_parser("query", help="run a read-only query and print the result")
    query.add_argument("sql", help="one SELECT statement, in Snowflake's dialect on every target")
    _add_target_flags(query)
    _add_format_flag(query)
    bench = sub.add_parser("bench", help="measure throughput and memory (prints figures)")
    bench.add_argument(
        "--snowflake",
        action="store_true",
        help="the Snowflake-path benchmark: the emulator, and a 150 ms round-trip model",
    )
    bench.add_argument(
        "--kafka",
        action="store_true",
        help="events/s into a broker (--kafka-bootstrap-servers, or a Tansu broker started "
        "for it), beside the null sink's",
    )
    bench.add_argument("--kafka-bootstrap-servers", default=None, help="--kafka: the brokers")
    bench.add_argument("--events", type=int, default=1_000_000)
    bench.add_argument(
        "--seed-way-events",
        type=int,
        default=2_000,
        help="events for the seed's way (a statement and commit per event)",
    )
    bench.add_argument(
        "--rss-events",
        type=int,
        default=3_000_000,
        help="events of the long run that checks RSS stays flat (0 = skip)",
    )
    bench.add_argument(
        "--bare-pairs",
        type=int,
        default=3,
        help="runs of the DuckDB pipeline and of bare DuckDB doing the same work, alternating",
    )
    bench.add_argument("--workdir", default=None, help="folder for the benchmark's DuckDB files")
    bench.add_argument(
        "--long",
        action="store_true",
        help="the long-run benchmark: memory, resume, refresh and verify at two ages",
    )
    bench.add_argument(
        "--long-events",
        type=int,
        default=30_000_000,
        help="--long: events of the memory run; the targets hold a third, 1/30 and 1/300 of it",
    )
    bench.add_argument(
        "--long-memory-only",
        action="store_true",
        help="--long: the memory run alone (RSS per window, the refreshes), no targets",
    )
    bench.add_argument(
        "--long-memory-mb",
        type=int,
        default=None,
        help="--long: DuckDB's memory limit for the memory run and the target builds "
        "(default: the service's own)",
    )
    return parser


def _flags(ns: argparse.Namespace) -> dict[str, Any]:
    skip = {"command", "sql", "upgrade", "format"}
    return {k: v for k, v in vars(ns).items() if k not in skip and v is not None}


def _fail(code: int, message: str) -> int:
    print(f"ecomm-cdc: error: {message}", file=sys.stderr, flush=True)
    return code


def _run(config: Config) -> NoReturn:
    """Run the service; end the process with its exit code (never a traceback).

    The process always ends through :func:`_exit`: a worker thread may still sit
    in a driver call (a silent network), and nothing may wait for it.
    """
    from .runner import ForcedExit, Service, StageFailed

    s = config.settings
    logs.configure(s.log_format, s.log_level)
    _process_settings()
    log = logs.get("service")
    target = config.target
    progress = _progress(config)
    background = {"progress": progress} if progress is not None else None
    applied = 0

    async def main() -> int:
        nonlocal applied
        service = Service(config, background=background)
        try:
            await service.run()
            return EXIT_OK
        finally:
            applied = service.stats.applied_total

    code = EXIT_RUNTIME
    try:
        code = _uvloop_run(main)
    except (ConfigError, TargetConfigError, StreamMismatch) as exc:
        code = _fail(EXIT_CONFIG, str(exc))
    except ForcedExit:
        log.error("service.exit", code=EXIT_RUNTIME, reason="drain abandoned", applied=applied)
    except StageFailed as failed:
        if any(
            isinstance(why, (ConfigError, TargetConfigError, StreamMismatch))
            for _, why in failed.failures
        ):
            code = EXIT_CONFIG
        for level, event, fields in failed.lines():
            getattr(log, level)(event, **fields, target=target)
    except SinkError as exc:
        log.error("service.failed", error=str(exc), target=target)
    except Exception as exc:
        log.error("service.crashed", error=logs.one_line(exc), target=target)
    _exit(code)


def _exit(code: int) -> NoReturn:
    """Flush what was written and end the process now, whatever threads are still running."""
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def _process_settings() -> None:
    """What this process sets once for all it runs (never a library's side effect).

    Arrow's default pool (mimalloc) kept ~30 MB more resident than the system
    allocator for the same batches (peak RSS 280 vs 250 MB, 1M events); glibc's mmap
    threshold stays fixed (:func:`service.watch.memory.fix_mmap_threshold`).
    """
    import pyarrow as pa

    from .watch import memory

    pa.set_memory_pool(pa.system_memory_pool())
    memory.fix_mmap_threshold()
    retry.quiet_stamina()
    threading.excepthook = _thread_failed


def _thread_failed(args: threading.ExceptHookArgs) -> None:
    """A library's own thread that dies (the connector's query-cancel timer on a reset
    connection) is one warning line, not a traceback; our threads report through futures."""
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    name = args.thread.name if args.thread is not None else "?"
    logs.get("service").warning("thread.failed", thread=name, error=logs.one_line(args.exc_value))


def _uvloop_run(main: Callable[[], Any]) -> int:
    import uvloop

    return int(uvloop.run(main()))


def _progress(config: Config) -> Callable[[Any], Coroutine[Any, Any, None]] | None:
    """A progress bar for a bounded run in a terminal (a background stage of the service)."""
    s = config.settings
    show = s.progress if s.progress is not None else (s.events is not None and sys.stderr.isatty())
    if not show or s.events is None:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    total = s.events

    async def progress(service: Any) -> None:
        bar = Progress(
            TextColumn("applying"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            transient=True,
            console=None,
        )
        task = bar.add_task("run", total=total, rate="")
        bar.start()
        try:
            while True:
                st = service.stats
                done = st.applied_total + st.skipped
                rate = st.applied_total / max(st.elapsed(), 1e-9)
                bar.update(task, completed=done, rate=f"{rate:,.0f} ev/s")
                await asyncio.sleep(0.2)
        finally:
            bar.stop()

    return progress


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if ns.command == "bench":
        if ns.kafka:
            from .bench.kafka import main as bench_kafka

            return bench_kafka(ns)
        if ns.snowflake:
            from .bench.snowflake import main as bench_snowflake

            return int(bench_snowflake(ns))
        if ns.long:
            from .bench.long import main as bench_long

            return bench_long(ns)
        from .bench.pipeline import main as bench_main

        return bench_main(ns)
    if ns.command == "emulator":
        from .sinks.emulator import serve

        return serve(ns)
    try:
        config = load(_flags(ns))
        if ns.command == "run":
            config.check_run()
    except ConfigError as exc:
        return _fail(EXIT_CONFIG, str(exc))
    if ns.command == "run":
        _run(config)
    from . import commands

    logs.configure(config.settings.log_format, config.settings.log_level, stream=sys.stderr)
    try:
        return int(getattr(commands, ns.command)(config, ns))
    except (ConfigError, TargetConfigError, StreamMismatch) as exc:
        return _fail(EXIT_CONFIG, str(exc))
    except SinkError as exc:
        return _fail(EXIT_RUNTIME, str(exc))
    except BrokenPipeError:  # `ecomm-cdc query ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
        return EXIT_RUNTIME


if __name__ == "__main__":
    sys.exit(main())
