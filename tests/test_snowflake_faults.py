"""Connections reset at random between the connector and the emulator: nothing lost, nothing twice."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from service.pipeline.generator import replay

from .conftest import START, cli, identity
from .emulator import Gate, Recorded, Server
from .faultproxy import LOSE, NO_REPLY, PASS, FaultProxy, Request, Rule, random_rule

EVENTS = 3_000
NETWORK_TIMEOUT = 3  # the connector gives up on a request after this many seconds of retries


def _log(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def chaos(seed: int) -> Rule:
    """Random resets everywhere, plus the two ambiguous outcomes, for certain, once each.

    - the reply to the first INSERT of a batch is lost after the server ran it: the batch
      is read back as *not committed* and applied again;
    - the reply to the sixth COMMIT since the first batch's INSERT (a batch's: the
      sessions' records in cdc_sessions commit before) is lost, and so is every reply to that
      session's COMMITs until the connector gives up (its writer then sends a
      ROLLBACK): the server committed, and the batch is read back as *committed*.
    """
    rand = random_rule(seed, p_lose=0.03, p_half=0.03, p_no_reply=0.03)
    lock = threading.Lock()
    state: dict[str, Any] = {"inserts": 0, "commits": 0, "victim": None}

    def rule(req: Request) -> str:
        with lock:
            # A batch's INSERT: the claim's own INSERTs (the stream's record, its
            # checkpoint rows) come first, and a lost reply there is no batch's.
            if req.verb == "INSERT" and req.statement.startswith("INSERT INTO raw_orders"):
                state["inserts"] += 1
                if state["inserts"] == 1:
                    return NO_REPLY
            if req.token and req.token == state["victim"]:
                if req.verb == "COMMIT":
                    return NO_REPLY  # the connector's own retries of it, too
                if req.verb:
                    state["victim"] = ""  # the writer took over: stop
            if req.verb == "COMMIT" and state["inserts"]:
                state["commits"] += 1
                if state["commits"] == 6:
                    state["victim"] = req.token
                    return NO_REPLY
        action = rand(req)
        return action if req.verb or action == LOSE else PASS

    return rule


def replayed_inserts(statements: list[Recorded]) -> int:
    """INSERTs of rows a session sent again within one transaction (no ROLLBACK or COMMIT
    between). The stream's record is inserted WHERE NOT EXISTS: a copy of it changes nothing."""
    open_inserts: dict[str, set[str]] = {}
    replays = 0
    for st in statements:
        seen = open_inserts.setdefault(st.token, set())
        if st.verb in ("ROLLBACK", "COMMIT"):
            seen.clear()
        elif st.verb == "INSERT" and "INTO raw_orders" in st.sql:
            replays += st.sql in seen
            seen.add(st.sql)
    return replays


@pytest.mark.timeout(400)
def test_random_resets_lose_nothing_and_duplicate_nothing() -> None:
    """Through a proxy that resets connections mid-request, raw_orders == the replay."""
    gate = Gate()
    with Server(gate) as server, FaultProxy(server.port, chaos(seed=3)) as proxy:
        proc = cli(
            "run",
            "--target",
            "snowflake",
            "--events",
            str(EVENTS),
            "--seed",
            "7",
            "--start",
            START,
            "--workers",
            "3",
            "--batch-size",
            "300",
            env=server.env(port=proxy.port, SNOWFLAKE_NETWORK_TIMEOUT=str(NETWORK_TIMEOUT)),
            timeout=380,
        )
        counts = dict(proxy.counts)
        rows = server.rows() if proc.returncode == 0 else {}
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    log = _log(proc.stdout)
    # The faults happened, of every kind, and the service saw some of them.
    assert sum(counts.values()) >= 10, counts
    assert any(k.startswith("half ") for k in counts), counts
    assert any(k.startswith("lose ") for k in counts), counts
    assert counts.get("no_reply INSERT", 0) >= 1 and counts.get("no_reply COMMIT", 0) >= 2, counts
    outcomes = {e["outcome"] for e in log if e["event"] == "sink.batch_resolved"}
    assert outcomes == {"committed", "not committed"}, outcomes
    # An INSERT whose reply was lost is never re-sent by the connector: the writer
    # rolls back and re-applies (so no replay relies on the emulator's primary key).
    assert replayed_inserts(gate.statements) == 0
    # ... and the table is exactly the replay: no duplicate (rows() checks), nothing lost.
    assert rows == replay(identity(7), EVENTS)
    summary = next(e for e in log if e["event"] == "pipeline.summary")
    assert summary["applied_total"] == EVENTS
    assert "Traceback" not in proc.stdout + proc.stderr
