"""Every Snowflake session of the service is bounded: a lock wait (LOCK_TIMEOUT) and a statement
(STATEMENT_TIMEOUT_IN_SECONDS) have an end, and a read through the service on Snowflake stops at
CDC_QUERY_TIMEOUT, where Snowflake's defaults are 12 hours and 2 days."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from .conftest import START, cli, spawn
from .emulator import Server
from .test_lifecycle import free_port

#: A query that runs for minutes on the emulator: a cross join of the stream's rows, four deep.
SLOW = "SELECT COUNT(*) FROM raw_orders a, raw_orders b, raw_orders c, raw_orders d"


def test_every_session_says_its_lock_and_statement_bounds() -> None:
    """Each connection a run opens (control, workers, reads) signs in with LOCK_TIMEOUT and
    STATEMENT_TIMEOUT_IN_SECONDS: the documented defaults, or the settings."""
    with Server() as server:
        done = cli(
            "run", "--target", "snowflake", "--events", "400", "--seed", "7", "--start", START,
            "--workers", "2", env=server.env(),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        params = [x["SESSION_PARAMETERS"] for x in server.gate.logins]
        assert len(params) >= 3  # the control session, two workers (and the layers' session)
        assert {(p["LOCK_TIMEOUT"], p["STATEMENT_TIMEOUT_IN_SECONDS"]) for p in params} == {
            (60, 600)
        }
        server.gate.logins.clear()
        done = cli(
            "run", "--target", "snowflake", "--events", "800", env=server.env(
                CDC_LOCK_TIMEOUT="5", CDC_STATEMENT_TIMEOUT="30"
            ),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr
        assert {
            (p["SESSION_PARAMETERS"]["LOCK_TIMEOUT"],
             p["SESSION_PARAMETERS"]["STATEMENT_TIMEOUT_IN_SECONDS"])
            for p in server.gate.logins
        } == {(5, 30)}  # fmt: skip


def test_a_statement_past_its_timeout_is_cancelled_by_the_server() -> None:
    """The emulator plays STATEMENT_TIMEOUT_IN_SECONDS as Snowflake does: 000630, in time."""
    with Server() as server:
        cli("run", "--target", "snowflake", "--events", "400", env=server.env())
        t0 = time.monotonic()
        done = cli(
            "query", SLOW, "--target", "snowflake", env=server.env(CDC_STATEMENT_TIMEOUT="2")
        )
        took = time.monotonic() - t0
        assert done.returncode == 1, done.stdout + done.stderr
        (line,) = [x for x in done.stderr.splitlines() if x.startswith("ecomm-cdc: error:")]
        assert "000630" in line and "timeout of 2 second(s)" in line, done.stderr
        assert "Traceback" not in done.stderr
        assert took < 30, took


def test_a_read_through_the_service_on_snowflake_stops_at_the_query_timeout() -> None:
    """POST /api/query of a running service on Snowflake: a slow query stops after
    CDC_QUERY_TIMEOUT with one line saying so, and the service goes on."""
    port = free_port()
    with Server() as server:
        filled = cli("run", "--target", "snowflake", "--events", "3000", "--seed", "7",
                     "--start", START, env=server.env())  # fmt: skip
        assert filled.returncode == 0, filled.stderr
        run = spawn(
            "run", "--target", "snowflake", "--seed", "7", "--start", START, "--rate", "100",
            env={**server.env(), "CDC_HTTP_PORT": str(port), "CDC_QUERY_TIMEOUT": "2"},
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{url}/readyz", timeout=2) as r:  # noqa: S310
                        if r.status == 200:
                            break
                except (OSError, urllib.error.URLError):
                    time.sleep(0.3)
            request = urllib.request.Request(  # noqa: S310
                f"{url}/api/query",
                data=json.dumps({"sql": SLOW}).encode(),
                headers={"Content-Type": "application/json"},
            )
            t0 = time.monotonic()
            try:
                urllib.request.urlopen(request, timeout=60)  # noqa: S310
                raise AssertionError("the slow query was answered")
            except urllib.error.HTTPError as exc:
                answer = json.loads(exc.read())
            took = time.monotonic() - t0
            assert "time limit of 2 s" in answer["error"] and "CDC_QUERY_TIMEOUT" in answer["error"]
            assert took < 20, took
            with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:  # noqa: S310
                assert r.status == 200
        finally:
            run.terminate()
            run.communicate(timeout=60)
        assert run.returncode == 0
