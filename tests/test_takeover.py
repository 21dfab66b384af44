"""A writer killed in the middle of a batch leaves its transaction open on the server, with its
locks (Snowflake keeps such a "detached" transaction until it has blocked another for 5 idle
minutes). The next writer of the shard aborts it when it takes the shard over, so its first
batch commits within seconds, and nothing is lost or applied twice.

The emulator runs in a process of its own that outlives the killed writers, as Snowflake
does, and raw_orders has no primary key (Snowflake enforces none), so a row applied twice
would show as a second row, not as an error.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import threading
import time

import pytest

from service.pipeline.generator import replay

from .conftest import START, identity, spawn
from .emulator import Outliving
from .test_fencing import UNKEYED

pytestmark = pytest.mark.timeout(400)

EVENTS = 6_000


def _run(emulator: Outliving) -> subprocess.Popen[str]:
    return spawn(
        "run", "--target", "snowflake", "--events", str(EVENTS), "--seed", "7", "--start", START,
        "--workers", "3", "--batch-size", "200", "--flush-interval", "0.2", "--rate", "1000",
        env=emulator.env(CDC_LOG_LEVEL="debug", CDC_HTTP_PORT="0"),
    )  # fmt: skip


def test_five_sigkills_then_the_same_command_commits_at_once_and_ends_exact() -> None:
    """SIGKILLed five times at random moments (three workers, batches of 200), against an
    emulator that outlives the writers: the same command then applies its first batch within
    10 s of starting, exits 0, and raw_orders is the replay; the killed writers' open
    transactions were aborted by the writers that took over."""
    rng = random.Random()
    aborted: list[int] = []
    with Outliving() as emulator:
        emulator.query(UNKEYED)
        for _ in range(5):
            proc = _run(emulator)
            assert proc.stdout is not None
            commits, want = 0, rng.randint(2, 8)
            for line in proc.stdout:
                if '"sink.takeover_aborted"' in line:
                    aborted += json.loads(line)["transactions"]
                if '"sink.batch_committed"' in line:
                    commits += 1
                    if commits >= want:
                        break
            time.sleep(rng.uniform(0, 0.15))  # anywhere, also inside the batches' transactions
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            assert commits >= want, f"a run ended before it was killed: {proc.communicate()}"
        t0 = time.monotonic()
        final = _run(emulator)
        assert final.stdout is not None
        watchdog = threading.Timer(120, final.kill)  # a writer held by old locks never ends
        watchdog.start()
        first_commit, lines = None, []
        for line in final.stdout:
            lines.append(line)
            if first_commit is None and '"sink.batch_committed"' in line:
                first_commit = time.monotonic() - t0
            if '"sink.takeover_aborted"' in line:
                aborted += json.loads(line)["transactions"]
        final.wait(30)
        watchdog.cancel()
        assert final.returncode == 0, "".join(lines[-30:])
        print(f"first batch committed {first_commit:.1f} s after the start; aborted {aborted}")
        assert first_commit is not None and first_commit < 10, "".join(lines[-30:])
        # Kills land in the batches' transactions (three workers, each mostly inside one).
        assert aborted, "no takeover found a transaction to abort"
        summary = next(json.loads(x) for x in lines if '"pipeline.summary"' in x)
        assert summary["skipped"] > 0 and summary["skipped"] + summary["applied_total"] == EVENTS
        assert emulator.rows() == replay(identity(), EVENTS)
        assert emulator.query("SHOW TRANSACTIONS") == []
