"""The service as a process: SIGTERM drains and exits 0, probes and metrics, supervision."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from service.pipeline.generator import replay

from .conftest import START, clean_env, identity, spawn
from .helpers import duckdb_checkpoints, duckdb_rows, expected_at_checkpoints


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def wait_for(pred, timeout: float = 30.0, every: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


def applied(port: int) -> float:
    try:
        _, text = get(port, "/metrics")
    except OSError:
        return 0.0
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("cdc_events_applied_total{")
    )


def logs_of(out: str) -> list[dict[str, object]]:
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_sigterm_drains_commits_everything_and_exits_0(tmp_path: Path) -> None:
    """Unbounded run; SIGTERM: exit 0 in time, applied == generated, table == replay of exactly those."""
    db, port = tmp_path / "s.duckdb", free_port()
    proc = spawn(
        "run", "--seed", "7", "--start", START, "--duckdb-path", str(db), "--rate", "30000",
        env={"CDC_HTTP_PORT": str(port), "CDC_SHUTDOWN_TIMEOUT": "20"},
    )  # fmt: skip
    try:
        wait_for(lambda: applied(port) > 20_000)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=25)
        took = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert took < 20
    summary = next(x for x in logs_of(out) if x["event"] == "pipeline.summary")
    assert summary["applied_total"] == summary["generated_total"] == summary["stream_seq"]
    assert duckdb_rows(db) == replay(identity(), int(str(summary["stream_seq"])))
    assert any(x["event"] == "service.stopping" and x["reason"] == "SIGTERM" for x in logs_of(out))


def test_metrics_move_and_readiness_flips_while_draining(tmp_path: Path) -> None:
    """Counters grow between scrapes; /readyz is 200 running, 503 while draining; /healthz stays 200."""
    db, port = tmp_path / "m.duckdb", free_port()
    # A deep queue, filled as fast as the producer can: the drain takes seconds.
    proc = spawn(
        "run", "--seed", "7", "--start", START, "--duckdb-path", str(db),
        "--queue-size", "400000", "--batch-size", "2000", "--workers", "1",
        env={"CDC_HTTP_PORT": str(port)},
    )  # fmt: skip
    try:
        wait_for(lambda: get(port, "/readyz")[0] == 200 if applied(port) > 0 else False)
        first = applied(port)
        second = wait_for(lambda: applied(port) if applied(port) > first else 0)
        assert second > first
        _, text = get(port, "/metrics")
        for name in (
            "cdc_events_generated_total",
            "cdc_queue_depth",
            "cdc_producer_blocked_seconds_total",
            "cdc_batch_events_bucket",
            "cdc_batch_apply_seconds_bucket",
            "cdc_retries_total",
            "cdc_errors_total",
            "cdc_last_commit_timestamp_seconds",
            "cdc_refresh_runs_total",
        ):
            assert name in text, name
        wait_for(lambda: "cdc_queue_depth 0.0" not in get(port, "/metrics")[1])
        proc.send_signal(signal.SIGTERM)
        codes = []
        while proc.poll() is None:
            try:
                codes.append((get(port, "/readyz")[0], get(port, "/healthz")[0]))
            except OSError:
                break
            time.sleep(0.02)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert (503, 200) in codes, codes
    assert (200, 200) not in codes[codes.index((503, 200)) :], "never ready again once draining"


# The real CLI with a DuckDB sink that misbehaves on purpose: a fault we cannot cause for real.
FAULTY_SINK = """
import sys, time
import service.runner
from service import __main__ as cli
from service.sinks.duckdb import DuckDBSink, DuckDBWriter

class Faulty(DuckDBWriter):
    calls = 0
    def apply(self, batch):
        Faulty.calls += 1
        {fault}
        super().apply(batch)

class Sink(DuckDBSink):
    def writer(self, worker):
        return Faulty(self)

service.runner.make_sink = lambda config, observer=None: Sink(config.settings.duckdb_path)
sys.exit(cli.main(sys.argv[1:]))
"""
CRASHING = FAULTY_SINK.format(
    fault='if Faulty.calls == 3: raise ZeroDivisionError("the sink broke on batch 3")'
)
SLOW = FAULTY_SINK.format(fault="time.sleep(1.0)")


def test_a_stage_that_crashes_stops_the_service_with_exit_1_and_one_line(tmp_path: Path) -> None:
    """An unexpected error in a consumer: exit 1 within seconds, one error line naming it, no hang."""
    db = tmp_path / "c.duckdb"
    t0 = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", CRASHING, "run", "--duckdb-path", str(db), "--workers", "1",
         "--seed", "7", "--start", START, "--batch-size", "500", "--rate", "20000"],
        env=clean_env(CDC_HTTP_PORT="0"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert time.monotonic() - t0 < 20
    errors = [x for x in logs_of(r.stdout) if x["level"] == "error"]
    assert len(errors) == 1, errors
    assert "ZeroDivisionError: the sink broke on batch 3" in str(errors[0]["error"])
    assert "Traceback" not in r.stdout + r.stderr
    # What was committed before the crash is exactly what its checkpoints say.
    ckpts = duckdb_checkpoints(db)
    assert ckpts
    assert duckdb_rows(db) == expected_at_checkpoints(identity(), ckpts)


def test_the_shutdown_timeout_and_a_second_signal_force_exit(tmp_path: Path) -> None:
    """A drain slower than CDC_SHUTDOWN_TIMEOUT exits 1 at the timeout; a second SIGTERM at once."""
    for mode in ("timeout", "second-signal"):
        db = tmp_path / f"{mode}.duckdb"
        proc = spawn(
            "-c", SLOW, "run", "--duckdb-path", str(db), "--workers", "1", "--seed", "7",
            "--start", START, "--batch-size", "200", "--queue-size", "100000",
            "--flush-interval", "0.05",
            env={
                "CDC_HTTP_PORT": "0",
                "CDC_SHUTDOWN_TIMEOUT": "2" if mode == "timeout" else "60",
                "CDC_LOG_LEVEL": "debug",
            },
        )  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if "sink.batch_committed" in line:
                break
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        if mode == "second-signal":
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        took = time.monotonic() - t0
        assert proc.returncode == 1, mode
        assert took < (6 if mode == "timeout" else 4), (mode, took)
        forced = [x for x in logs_of(out) if x["event"] == "service.forced"]
        assert forced and ("timeout" in str(forced[0]["reason"])) == (mode == "timeout")
        # Committed work stays consistent with its checkpoints: a rerun resumes from them.
        ckpts = duckdb_checkpoints(db)
        assert ckpts
        assert duckdb_rows(db) == expected_at_checkpoints(identity(), ckpts)


def test_healthz_fails_when_no_commit_lands_while_events_wait(tmp_path: Path) -> None:
    """A sink that hangs: /healthz turns 503 after CDC_STALL_TIMEOUT; /readyz stays 200."""
    import asyncio
    import threading

    from service.runner import Service
    from service.sinks.null import NullSink

    from .conftest import config

    release = threading.Event()

    class Hanging(NullSink):
        def writer(self, worker: int):  # type: ignore[no-untyped-def]
            class W:
                retries = 0

                def apply(self, batch: object) -> None:
                    release.wait(30)  # a warehouse that never answers

                def close(self) -> None: ...

            return W()

    port = free_port()
    service = Service(
        config(events=50_000, http_port=port, http_host="127.0.0.1", stall_timeout=1.0, workers=1),
        sink=Hanging(),
    )
    seen: list[tuple[int, int]] = []

    async def main() -> None:
        task = asyncio.ensure_future(service.run())
        loop = asyncio.get_running_loop()
        for _ in range(60):
            await asyncio.sleep(0.1)
            health = await loop.run_in_executor(None, get, port, "/healthz")
            ready = await loop.run_in_executor(None, get, port, "/readyz")
            seen.append((health[0], ready[0]))
            if health[0] == 503:
                break
        release.set()
        await task

    asyncio.run(main())
    assert seen[0][0] == 200, "healthy at first"
    assert seen[-1] == (503, 200), seen


def test_a_takeover_is_one_error_line_however_many_stages_met_it() -> None:
    """Both workers fenced (and, say, a refresh failing meanwhile): one error line, the rest
    warnings; without a takeover every failure is an error line of its own."""
    from service.runner import StageFailed
    from service.sinks.base import Fenced, SinkError

    both = StageFailed(
        [
            ("refresher", SinkError("refresh failed")),
            ("consumer-0", Fenced("shard '0' was taken over by b pid 2")),
            ("consumer-1", Fenced("shard '0' was taken over by b pid 2 (undecided)")),
        ]
    )
    lines = both.lines()
    assert [(lv, ev) for lv, ev, _ in lines] == [
        ("warning", "service.also_failed"),
        ("error", "service.failed"),
        ("warning", "service.also_failed"),
    ]
    assert lines[1][2] == {"error": "shard '0' was taken over by b pid 2", "stage": "consumer-0"}
    plain = StageFailed([("refresher", SinkError("refresh failed")), ("pipeline", KeyError("x"))])
    assert [(lv, ev) for lv, ev, _ in plain.lines()] == [
        ("error", "service.failed"),
        ("error", "service.crashed"),
    ]
