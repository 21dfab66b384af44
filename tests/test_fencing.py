"""One writer per shard, and a batch's rows never commit without its checkpoint (the emulator).

Two processes of one shard against one schema whose raw_orders has no enforced key
(as on Snowflake): the newer one takes the shard over, the older one stops at its
next batch, and the table is the replay with no order twice. A batch whose session
dies before its COMMIT leaves nothing visible, and is applied once afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from service import clock
from service.pipeline import checkpoint
from service.pipeline.generator import replay
from service.sinks.base import Fenced, transaction
from service.sinks.snowflake import open_connection
from service.sinks.snowflake.connection import SnowSession

from .conftest import START, identity, spawn
from .emulator import ROWS_SQL, Gate, Recorded, Server, as_rows, committed_rows, end_session
from .helpers import expected_at_checkpoints

pytestmark = pytest.mark.timeout(400)

EVENTS = 8_000
SEED = 5
# Snowflake does not enforce primary keys: the table the operator made has none.
UNKEYED = (
    "CREATE TABLE raw_orders (order_id VARCHAR NOT NULL, customer_id VARCHAR, "
    "order_date TIMESTAMP_NTZ, status VARCHAR, amount NUMBER(12, 2), product_id VARCHAR, "
    "quantity INTEGER)"
)


def _writer(server: Server, *extra: str) -> subprocess.Popen[str]:
    return spawn(
        "run", "--target", "snowflake", "--events", str(EVENTS), "--seed", str(SEED),
        "--start", START, "--workers", "2", "--batch-size", "200", "--flush-interval", "0.2",
        *extra,
        env={**server.env(), "CDC_LOG_LEVEL": "debug", "CDC_HTTP_PORT": "0"},
    )  # fmt: skip


def _wait_for(proc: subprocess.Popen[str], event: str, count: int = 1) -> list[str]:
    """Read the process's log until ``event`` was seen ``count`` times; returns the lines."""
    assert proc.stdout is not None
    seen, lines = 0, []
    deadline = time.monotonic() + 120
    for line in proc.stdout:
        lines.append(line)
        if f'"{event}"' in line:
            seen += 1
            if seen >= count:
                return lines
        assert time.monotonic() < deadline, f"no {event} in time"
    raise AssertionError(f"{event} never came: {''.join(lines[-20:])}")


def _logs(text: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in text.splitlines() if x.startswith("{")]


def _unique_rows(server: Server) -> dict[str, tuple[object, ...]]:
    """raw_orders (``Server.rows`` fails on an order id seen twice)."""
    return server.rows()


def _two_writers(server: Server, started: Any) -> None:
    """A runs; ``started(a)`` decides when B starts; A must stop, B must finish the stream."""
    server.query(UNKEYED)
    a = _writer(server, "--rate", "200")  # 40 s alone: B starts long before
    try:
        _wait_for(a, "sink.batch_committed", 3)
        b = started(a)
        t_b = time.monotonic()
        out_a, _ = a.communicate(timeout=120)
        fenced_after = time.monotonic() - t_b
        out_b, err_b = b.communicate(timeout=300)
    finally:
        a.kill()
    # B's own words too: once in a CI run A was never fenced, and B's output was not kept.
    assert a.returncode == 1, out_a[-2000:] + f"\n--- B (exit {b.returncode}):\n" + out_b[-3000:]
    errors = [x for x in _logs(out_a) if x["level"] == "error"]
    assert len(errors) == 1, errors
    line = str(errors[0]["error"])
    assert "shard '0' was taken over by" in line and f"pid {b.pid}" in line, line
    print(f"the first writer stopped {fenced_after:.1f} s after the second started")
    assert fenced_after < 60, fenced_after
    assert b.returncode == 0, out_b[-3000:] + err_b[-2000:]
    took_over = [x for x in _logs(out_b) if x["event"] == "service.took_over"]
    assert took_over and f"pid {a.pid}" in str(took_over[0]["previous"])
    assert _unique_rows(server) == replay(identity(SEED), EVENTS)


def test_a_second_writer_takes_the_shard_over_and_the_first_stops() -> None:
    """Two processes of shard 0, the second started mid-run: exit 1 and one line naming the
    newcomer for the first, exit 0 for the second; raw_orders is the replay, no id twice."""
    with Server() as server:
        _two_writers(server, lambda a: _writer(server))


def test_an_old_writer_stops_as_soon_as_a_newer_claim_is_recorded() -> None:
    """Between the claim's two steps (epoch raised in cdc_streams, then stamped on the
    checkpoints) the old writer's next batch already finds nothing to advance, and an
    undecided batch is not guessed at. Without this a busy old writer starves the stamp
    on the emulator: its writes conflict with the old writer's batches instead of waiting
    (seen under load: every attempt failed until the old writer ran out of events)."""
    with Server() as server:
        first = _writer(server, "--events", "400")  # the schema, a stream, checkpoints, epoch 1
        out, err = first.communicate(timeout=120)
        assert first.returncode == 0, out[-2000:] + err[-2000:]
        old = SnowSession(
            open_connection(server.emulator.spec(database="ECOMM"), autocommit=False, tag="old"),
            autocommit=False,
        )
        new = SnowSession(
            open_connection(server.emulator.spec(database="ECOMM"), autocommit=False, tag="new"),
            autocommit=False,
        )
        identity = str(server.query("SELECT identity FROM cdc_streams")[0][0])
        seqs = dict(server.query("SELECT partition_id, last_seq FROM cdc_checkpoints"))
        part, seq = next(iter(seqs.items()))
        epoch = checkpoint.holder(old, "0")
        assert epoch is not None and epoch.epoch == 1
        sql, params = checkpoint.advance("0", 1, {part: seq + 1}, clock.utc_now())

        assert old.changed(sql, params) == 1  # while epoch 1 holds the shard, a batch advances
        assert checkpoint.committed(old, "0", 1, {part: seq + 1})
        old.rollback()

        with transaction(new):  # the claim's first step only: no stamp yet
            assert (
                checkpoint.record(new, "0", identity, len(seqs), False, "elsewhere pid 7")[0] == 2
            )
        changed = old.changed(sql, params)
        assert changed == 0
        with pytest.raises(Fenced, match=r"taken over by elsewhere pid 7 since .*epoch 2\)"):
            checkpoint.advanced(old, "0", 1, changed, 1)
        old.rollback()
        with pytest.raises(Fenced, match="its last batch undecided"):
            checkpoint.committed(old, "0", 1, {part: seq})
        old.rollback()
        with transaction(new):  # the stamp now meets no open batch of the old writer
            assert checkpoint.stamp(new, "0", 2, None).checkpoints == seqs
        old.conn.close()
        new.conn.close()


def test_a_writer_taken_over_in_the_middle_of_a_batch_cannot_commit_it() -> None:
    """The first writer's batch is held at its checkpoint UPDATE while the second claims the
    shard: that batch cannot commit afterwards; the second applies it, once."""
    holding = asyncio.Event()
    state: dict[str, Any] = {"held": 0}

    async def hook(rec: Recorded) -> None:
        if not rec.sql.startswith("UPDATE cdc_checkpoints SET last_seq") or state["held"]:
            return
        if (
            sum(
                1
                for r in gate.statements
                if r.sql.startswith("UPDATE cdc_checkpoints SET last_seq")
            )
            < 5
        ):
            return
        state["held"] = 1
        holding.set()
        deadline = time.monotonic() + 60
        # Hold the batch (its rows already sent) until the newcomer's claim has committed.
        while time.monotonic() < deadline:
            epochs = committed_rows("SELECT writer_epoch FROM cdc_streams WHERE shard = '0'")
            if epochs and epochs[0][0] and epochs[0][0] >= 2:
                break
            await asyncio.sleep(0.1)
        state["held"] = 2

    gate = Gate(hook=hook)

    def start_when_held(a: subprocess.Popen[str]) -> subprocess.Popen[str]:
        deadline = time.monotonic() + 60
        while not holding.is_set():
            assert time.monotonic() < deadline, "no batch was held"
            time.sleep(0.05)
        return _writer(server)

    with Server(gate) as server:
        _two_writers(server, start_when_held)
    assert state["held"] == 2


def test_a_batch_never_commits_without_its_checkpoint() -> None:
    """At a batch's COMMIT, another session sees exactly what the committed checkpoints say
    (no row of the batch); the session then dies before COMMIT, and the batch lands once."""
    seen: list[tuple[dict[str, tuple[object, ...]], dict[int, int]]] = []
    open_tx: dict[str, bool] = {}

    async def hook(rec: Recorded) -> None:
        if rec.sql.startswith("UPDATE cdc_checkpoints SET last_seq"):
            open_tx[rec.token] = True
        elif rec.verb == "COMMIT" and open_tx.pop(rec.token, False):
            batches = sum(1 for r in gate.statements if r.verb == "COMMIT")
            if len(seen) < 3 and batches % 4 == 0:
                ckpts = dict(committed_rows("SELECT partition_id, last_seq FROM cdc_checkpoints"))
                seen.append((as_rows(committed_rows(ROWS_SQL)), ckpts))
                end_session(rec.token)  # the client is gone before its COMMIT

    gate = Gate(hook=hook)
    with Server(gate) as server:
        proc = _writer(server)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, out[-3000:] + err[-2000:]
        rows = _unique_rows(server)
    assert len(seen) == 3, "three batches lost their session before COMMIT"
    for visible, ckpts in seen:
        assert visible == expected_at_checkpoints(identity(SEED), ckpts)
    assert rows == replay(identity(SEED), EVENTS)
    resolved = [x["outcome"] for x in _logs(out) if x["event"] == "sink.batch_resolved"]
    assert resolved.count("not committed") >= 3, resolved


def test_five_sigkills_on_the_emulator_path_then_the_same_command_ends_exact(
    tmp_path: Path,
) -> None:
    """--target emulator with its database in a folder, batches of 200: killed five times at
    random moments, the same command then runs to the end in normal time, and verify passes
    (raw_orders == replay, no order id twice)."""
    env = {
        "CDC_EMULATOR_PATH": str(tmp_path / "emulator"),
        "CDC_LOG_LEVEL": "debug",
        "CDC_HTTP_PORT": "0",
    }
    args = (
        "run", "--target", "emulator", "--events", "8000", "--seed", "7", "--start", START,
        "--workers", "2", "--batch-size", "200", "--flush-interval", "0.1", "--rate", "800",
    )  # fmt: skip
    rng = random.Random()
    for _ in range(5):
        proc = spawn(*args, env=env)
        _wait_for(proc, "sink.batch_committed", rng.randint(1, 4))
        time.sleep(rng.uniform(0, 0.3))  # anywhere, also inside a batch's transaction
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    t0 = time.monotonic()
    final = spawn(*args, env=env)
    out, err = final.communicate(timeout=240)
    took = time.monotonic() - t0
    assert final.returncode == 0, out[-3000:] + err[-2000:]
    summary = next(x for x in _logs(out) if x["event"] == "pipeline.summary")
    assert summary["skipped"] > 0 and summary["skipped"] + summary["applied_total"] == 8000
    print(f"the run after five SIGKILLs took {took:.1f} s")
    assert took < 120, f"the last run took {took:.0f} s"
    checked = spawn("verify", "--target", "emulator", env=env)
    vout, verr = checked.communicate(timeout=120)
    assert checked.returncode == 0, vout[-3000:] + verr[-2000:]
    assert "order_id unique" in vout and "FAILED" not in vout
