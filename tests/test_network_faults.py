"""Network faults in every phase, a network gone silent, and a bug of ours (the emulator path).

The connector talks to the emulator through a TCP proxy that resets connections
and cuts replies off mid-body. Every phase is retried by the one policy; a stop
keeps its deadline whatever the network does; our own errors are never retried.
"""

from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

import pytest

from service.pipeline.generator import replay

from .conftest import START, clean_env, identity, spawn
from .emulator import Server
from .faultproxy import CUT, LOSE, NO_REPLY, PASS, FaultProxy, Request, Rule

pytestmark = pytest.mark.timeout(600)

EVENTS = 3_000
SEEDS = (11, 12, 13, 14, 15)
PHASES = {"signin", "schema", "stream", "connect", "apply", "layers", "refresh"}


def _logs(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def _kind(req: Request) -> str:
    """What the request is part of, as the service names its phases."""
    sql = req.statement
    if req.path.endswith("/login-request"):
        # The service tags its sessions ("ecomm-cdc control", "... worker-0", "... sql").
        role = req.tag.rsplit(" ", 1)[-1].split("-")[0]
        return {"control": "signin", "worker": "connect"}.get(role, "other")
    if sql.startswith(("CREATE TABLE", "ALTER TABLE cdc", "USE SCHEMA")):
        return "schema"
    if "information_schema" in sql:
        return "schema"
    if sql.startswith("ALTER DYNAMIC TABLE"):
        return "refresh"
    if sql.startswith(("CREATE DYNAMIC TABLE", "CREATE TASK", "ALTER TASK")):
        return "layers"
    if "raw_orders" in sql or sql.startswith("UPDATE cdc_checkpoints SET last_seq"):
        return "apply"
    if "cdc_" in sql:
        return "stream"
    return "other"


#: Consecutive failures that outlast the connector's own retries (two attempts at a
#: sign-in; a statement is retried for SNOWFLAKE_NETWORK_TIMEOUT), so that our policy
#: meets them.
STUBBORN = {"signin": 5, "connect": 5, "apply": 3}  # a batch is sent once: ours from the first
STUBBORN_STATEMENT = 14
#: Which phases each of the five runs makes fail STUBBORN times in a row.
FORCED = (("signin", "layers"), ("schema", "refresh"), ("stream",), ("connect",), ("apply",))


def faults(seed: int, forced: tuple[str, ...], share: float = 0.12) -> Rule:
    """Resets and cut replies on ``share`` of all requests, at random; and the first
    STUBBORN requests of each ``forced`` kind lost, for certain."""
    rng = random.Random(seed)
    lock = threading.Lock()
    left = {kind: STUBBORN.get(kind, STUBBORN_STATEMENT) for kind in forced}

    def rule(req: Request) -> str:
        with lock:
            kind = _kind(req)
            if left.get(kind, 0) > 0:
                left[kind] -= 1
                return LOSE
            r = rng.random()
        if r < share / 3:
            return LOSE
        if r < 2 * share / 3:
            return CUT
        if r < share:
            return NO_REPLY
        return PASS

    return rule


def test_faults_in_every_phase_are_ridden_through_five_times_over() -> None:
    """Five runs, each with a different fault seed, resets and cut replies on >= 10 % of the
    requests: every run exits 0 with raw_orders == the replay, and the retry lines show
    faults met in every phase (sign-in, tables, stream, connections, batches, layers, refresh)."""
    seen: Counter[str] = Counter()
    for seed, forced in zip(SEEDS, FORCED, strict=True):
        with Server() as server, FaultProxy(server.port, faults(seed, forced)) as proxy:
            proc = subprocess.run(
                [sys.executable, "-m", "service", "run", "--target", "snowflake",
                 "--events", str(EVENTS), "--seed", "7", "--start", START,
                 "--workers", "2", "--batch-size", "500"],
                env=clean_env(**{**server.env(port=proxy.port), "CDC_HTTP_PORT": "0",
                                 "SNOWFLAKE_NETWORK_TIMEOUT": "4", "CDC_RETRY_TIMEOUT": "120"}),
                capture_output=True, text=True, timeout=400, check=False,
            )  # fmt: skip
            faulted, requests = sum(proxy.counts.values()), proxy.requests
            rows = server.rows() if proc.returncode == 0 else {}
        assert proc.returncode == 0, f"seed {seed}: " + proc.stdout[-3000:] + proc.stderr[-1500:]
        assert "Traceback" not in proc.stdout + proc.stderr
        assert rows == replay(identity(7), EVENTS), f"seed {seed}"
        retried = [x for x in _logs(proc.stdout) if x["event"] == "retry.scheduled"]
        seen.update(str(x["phase"]) for x in retried)
        assert faulted >= 0.10 * requests, (requests, proxy.counts)
    assert set(seen) >= PHASES, seen


def _silent_port() -> tuple[socket.socket, int]:
    """A host that accepts connections and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock, sock.getsockname()[1]


def _stop_and_time(proc: subprocess.Popen[str], signals: int = 1) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    if signals == 2:
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    return time.monotonic() - t0


def _read_until(proc: subprocess.Popen[str], event: str, count: int) -> None:
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if f'"{event}"' in line:
            seen += 1
            if seen >= count:
                return
    raise AssertionError(f"{event} x{count} never came")


@pytest.mark.parametrize("signals", [1, 2])
def test_a_stop_keeps_its_deadline_when_the_network_goes_silent(signals: int) -> None:
    """Mid-run the network goes silent, then SIGTERM (and, once, a second SIGTERM): the
    process ends within CDC_SHUTDOWN_TIMEOUT + 2 s (a second signal: 2 s), exit 1 (the
    drain was abandoned); with the network back, the same command completes to the replay."""
    timeout = 5
    args = (
        "run", "--target", "snowflake", "--events", "6000", "--seed", "7", "--start", START,
        "--workers", "2", "--batch-size", "200", "--rate", "600",
    )  # fmt: skip
    with Server() as server, FaultProxy(server.port, lambda req: PASS) as proxy:
        env = {
            **server.env(port=proxy.port),
            "CDC_SHUTDOWN_TIMEOUT": str(timeout),
            "CDC_LOG_LEVEL": "debug",
            "CDC_HTTP_PORT": "0",
        }
        proc = spawn(*args, env=env)
        try:
            _read_until(proc, "sink.batch_committed", 4)
            proxy.silent.set()
            time.sleep(1.0)  # batches now hang on the silent network
            took = _stop_and_time(proc, signals)
        finally:
            proc.kill()
        assert proc.returncode == 1
        print(
            f"silent network, {signals} SIGTERM: exit 1 after {took:.2f} s (CDC_SHUTDOWN_TIMEOUT={timeout})"
        )
        assert took < (2 if signals == 2 else timeout + 2), took
        proxy.silent.clear()
        # The network back: straight to the server, not through the proxy that held the
        # silence (its connections of the killed process go nowhere).
        again = spawn(*args, env={**env, **server.env()})
        out, err = again.communicate(timeout=300)
        assert again.returncode == 0, out[-3000:] + err[-1500:]
        assert server.rows() == replay(identity(7), 6000)


def test_a_stop_during_sign_in_to_a_host_that_never_answers_is_prompt() -> None:
    """The account accepts connections and never answers: SIGTERM during sign-in (whose
    login timeout is 60 s) ends the process at once, well within CDC_SHUTDOWN_TIMEOUT + 2 s,
    exit 0: nothing was accepted, so nothing was abandoned."""
    sock, port = _silent_port()
    try:
        env = {
            "SNOWFLAKE_ACCOUNT": "a", "SNOWFLAKE_USER": "u", "SNOWFLAKE_PASSWORD": "p",
            "SNOWFLAKE_HOST": "127.0.0.1", "SNOWFLAKE_PORT": str(port),
            "SNOWFLAKE_PROTOCOL": "http", "CDC_SHUTDOWN_TIMEOUT": "5", "CDC_HTTP_PORT": "0",
        }  # fmt: skip
        proc = spawn("run", "--target", "snowflake", "--events", "100", env=env)
        try:
            time.sleep(2.5)  # inside the sign-in (its login timeout is 60 s)
            assert proc.poll() is None
            took = _stop_and_time(proc)
        finally:
            proc.kill()
        out = proc.stdout.read() if proc.stdout else ""
    finally:
        sock.close()
    print(f"SIGTERM during a sign-in that never ends: exit {proc.returncode} after {took:.2f} s")
    assert took < 5 + 2, took
    assert proc.returncode == 0, out[-2000:]
    assert "service.stopped" in out and "Traceback" not in out


BUGGY = """
import sys
from service import __main__ as cli
from service.sinks.snowflake import sql

real = sql.plan
calls = []

def plan(batch, claim, now, max_rows=sql.MAX_LIST):
    calls.append(1)
    if len(calls) == 3:
        raise KeyError("order_total")  # a bug of ours, building the third batch
    return real(batch, claim, now, max_rows)

sql.plan = plan
sys.exit(cli.main(sys.argv[1:]))
"""


def test_a_bug_of_ours_in_a_batch_stops_the_service_at_once_without_retrying() -> None:
    """Our own code raises while building a batch: exit 1 within 5 s of it, one error line
    naming the exception, and no retry."""
    with Server() as server:
        proc = spawn(
            "-c", BUGGY, "run", "--target", "snowflake", "--events", "5000", "--seed", "7",
            "--start", START, "--workers", "1", "--batch-size", "200",
            env={**server.env(), "CDC_HTTP_PORT": "0", "CDC_LOG_LEVEL": "debug"},
        )  # fmt: skip
        out, err = proc.communicate(timeout=120)
    lines = _logs(out)
    assert proc.returncode == 1, out[-2000:] + err[-1000:]
    errors = [x for x in lines if x["level"] == "error"]
    assert len(errors) == 1, errors
    assert "KeyError" in str(errors[0]["error"]) and "order_total" in str(errors[0]["error"])
    assert not [x for x in lines if x["event"] == "retry.scheduled"], "never retried"
    failed = next(x for x in lines if x["event"] == "sink.batch_failed")
    ended = errors[0]["timestamp"]
    assert _seconds(str(ended)) - _seconds(str(failed["timestamp"])) < 5
    assert "Traceback" not in out + err


def _seconds(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_network_that_goes_silent_for_a_while_is_ridden_through() -> None:
    """Mid-run the network goes silent for 20 s, then comes back (the held connections are
    reset): no stop asked, the run retries through it, exits 0, and equals the replay."""
    args = (
        "run", "--target", "snowflake", "--events", "6000", "--seed", "7", "--start", START,
        "--workers", "2", "--batch-size", "200", "--rate", "600",
    )  # fmt: skip
    with Server() as server, FaultProxy(server.port, lambda req: PASS) as proxy:
        env = {**server.env(port=proxy.port), "CDC_HTTP_PORT": "0", "CDC_LOG_LEVEL": "debug"}
        proc = spawn(*args, env=env)
        try:
            _read_until(proc, "sink.batch_committed", 4)
            proxy.silent.set()
            time.sleep(20)
            proxy.silent.clear()
            out, err = proc.communicate(timeout=300)
        finally:
            proc.kill()
        assert proc.returncode == 0, out[-3000:] + err[-1500:]
        retried = [x for x in _logs(out) if x["event"] == "retry.scheduled"]
        assert "apply" in {x["phase"] for x in retried}, retried
        assert "Traceback" not in out + err
        assert server.rows() == replay(identity(7), 6000)
