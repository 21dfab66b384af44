"""``ecomm-cdc bench``: throughput and memory, measured in one run, printed as figures.

Each pipeline figure comes from a real ``ecomm-cdc run`` in a child process
(its own interpreter, so its RSS is its own), read from its summary line;
RSS is sampled from outside with psutil. The seed's way (one statement and
one commit per event) runs on DuckDB in this process, on a smaller count,
and is compared with the pipeline as a ratio from the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import psutil
from rich.console import Console
from rich.table import Table

from ..pipeline.events import Op
from ..pipeline.generator import GeneratorSettings, OrderStream, StreamIdentity

START = "2026-01-01T00:00:00"
SEED = 7


class PeakRss:
    """The highest resident set size of a process, sampled every 50 ms from outside (MB)."""

    def __init__(self, pid: int) -> None:
        self._ps = psutil.Process(pid)
        self.peak = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            try:
                self.peak = max(self.peak, self.now())
            except psutil.Error:
                return
            time.sleep(0.05)

    def now(self) -> float:
        """The resident set size at this moment (MB)."""
        return float(self._ps.memory_info().rss) / 2**20

    def stop(self) -> float:
        """Stop sampling; the peak seen."""
        self._done.set()
        self._thread.join()
        return self.peak


@dataclass
class Measured:
    label: str
    events: int
    seconds: float
    peak_rss_mb: float
    rss_by_events: list[tuple[int, float]] = field(default_factory=list)  # at throughput lines
    rss_at_end: float | None = None  # at the summary line, after the final refresh
    streaming_s: float = 0.0  # the producer's start to the last commit (the summary's)
    startup_s: float = 0.0  # launch to the producer's start
    path: Path | None = None  # the run's DuckDB file

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0

    @property
    def streaming_rate(self) -> float:
        """Steady state: start-up and the final refresh excluded."""
        return self.events / self.streaming_s if self.streaming_s else 0.0


def run_pipeline(label: str, target: str, events: int, workdir: Path, *extra: str) -> Measured:
    """One real run of the service; RSS sampled every 50 ms and at every throughput line."""
    db = workdir / f"{label.replace(' ', '_')}.duckdb"
    for p in (db, db.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "SNOWFLAKE_"))}
    env.update(CDC_HTTP_PORT="0", CDC_LOG_FORMAT="json")
    cmd = [
        sys.executable,
        "-m",
        "service",
        "run",
        "--target",
        target,
        "--events",
        str(events),
        "--seed",
        str(SEED),
        "--start",
        START,
        "--duckdb-path",
        str(db),
        "--no-progress",
        *extra,
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rss = PeakRss(proc.pid)
    summary: dict[str, Any] = {}
    at_end: float | None = None
    by_events: list[tuple[int, float]] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        if rec.get("event") == "pipeline.throughput":
            with contextlib.suppress(psutil.Error):
                by_events.append((int(rec["generated"]), rss.now()))
        elif rec.get("event") == "pipeline.summary":
            summary = rec
            with contextlib.suppress(psutil.Error):
                at_end = rss.now()
    proc.wait()
    peak = rss.stop()
    if proc.returncode != 0 or not summary:
        err = proc.stderr.read() if proc.stderr else ""
        raise SystemExit(f"bench: {label} failed (exit {proc.returncode}): {err.strip()[-500:]}")
    return Measured(
        label,
        int(summary["applied_total"]),
        float(summary["elapsed_s"]),
        peak,
        by_events,
        at_end,
        streaming_s=float(summary.get("streaming_s") or 0.0),
        startup_s=float(summary.get("startup_s") or 0.0),
        path=db,
    )


def seed_way(events: int, workdir: Path) -> Measured:
    """The original script's way: one statement and one commit per event (DuckDB, autocommit)."""
    db = workdir / "seed_way.duckdb"
    db.unlink(missing_ok=True)
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE raw_orders (order_id VARCHAR PRIMARY KEY, customer_id VARCHAR, "
        "order_date TIMESTAMP, status VARCHAR, amount DECIMAL(12, 2), product_id VARCHAR, quantity INTEGER)"
    )
    start = int(dt.datetime.fromisoformat(START).replace(tzinfo=dt.UTC).timestamp())
    stream = OrderStream(StreamIdentity(SEED, start, "0", 64, GeneratorSettings()))
    t0 = time.perf_counter()
    for ev in stream.take(events):
        if ev.op is Op.INSERT:
            con.execute(
                "INSERT INTO raw_orders VALUES (?, ?, to_timestamp(?)::TIMESTAMP, ?, ?::DECIMAL(12,2) / 100, ?, ?)",
                [
                    ev.order_id,
                    ev.customer_id,
                    ev.order_ts,
                    ev.status,
                    ev.amount_cents,
                    ev.product_id,
                    ev.quantity,
                ],
            )
        elif ev.op is Op.UPDATE:
            con.execute(
                "UPDATE raw_orders SET status = ?, amount = ?::DECIMAL(12,2) / 100, quantity = ? WHERE order_id = ?",
                [ev.status, ev.amount_cents, ev.quantity, ev.order_id],
            )
        else:
            con.execute("DELETE FROM raw_orders WHERE order_id = ?", [ev.order_id])
    seconds = time.perf_counter() - t0
    con.close()
    rss = psutil.Process().memory_info().rss / 2**20
    return Measured("seed's way (statement + commit per event)", events, seconds, rss)


def queried_ratio(events: int, workdir: Path, console: Console, pairs: int = 3) -> float:
    """DuckDB throughput while a loop queries the run every second, over the same run unqueried.

    Both runs serve HTTP (the dashboard's sampling runs in both); the loop asks
    what ``ecomm-cdc query`` and ``report`` ask a running service. Runs
    alternate, ``pairs`` of each, and the best of each is compared: run to run
    the rate moves by more than 10 % on a busy machine, and noise only ever
    slows a run down.
    """
    import socket
    import statistics
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    # A full scan of raw_orders, as `query` would send it; then what `report` asks.
    scan = "SELECT status, count(*) AS orders, sum(amount) AS revenue FROM raw_orders GROUP BY 1"
    latencies: list[float] = []

    def ask(stop: threading.Event) -> None:
        body = json.dumps({"sql": scan}).encode()
        while not stop.wait(1.0):
            t0 = time.perf_counter()
            try:
                query = urllib.request.Request(  # noqa: S310 (a local URL)
                    base + "/api/query", body, {"Content-Type": "application/json"}
                )
                for req in (query, base + "/api/report"):
                    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
                        resp.read()
            except OSError:
                continue  # not listening yet, or done
            latencies.append(time.perf_counter() - t0)

    plain: list[float] = []
    queried: list[float] = []
    for i in range(pairs):
        flags = ("--http-port", str(port))
        plain.append(run_pipeline(f"duckdb unqueried {i}", "duckdb", events, workdir, *flags).rate)
        stop = threading.Event()
        asker = threading.Thread(target=ask, args=(stop,), daemon=True)
        asker.start()
        try:
            queried.append(
                run_pipeline(f"duckdb queried {i}", "duckdb", events, workdir, *flags).rate
            )
        finally:
            stop.set()
            asker.join()
    ratio = max(queried) / max(plain)
    answered = f"{len(latencies)} rounds answered"
    if latencies:
        answered += f", median {statistics.median(latencies) * 1000:.0f} ms per query + report"
    console.print(
        f"queried every second / unqueried (DuckDB, {events:,} events, {pairs} runs each): "
        f"[bold]{ratio:.3f}[/] (best {max(queried):,.0f} vs {max(plain):,.0f} ev/s; queried "
        f"{', '.join(f'{r:,.0f}' for r in queried)}; unqueried "
        f"{', '.join(f'{r:,.0f}' for r in plain)}; {answered}); target: a drop under 10 % "
        f"({'met' if ratio > 0.9 else 'NOT met'})"
    )
    return ratio


def bare_ratio(events: int, workdir: Path, console: Console, pairs: int = 3) -> float:
    """The DuckDB pipeline over bare DuckDB doing the same work (:mod:`service.bench.bare`).

    Alternating, ``pairs`` of each; the pipeline's steady rate (start-up and the
    final refresh excluded, as bare DuckDB has neither) over bare DuckDB's, pair by
    pair; the median of the pairs is the figure. Both must end with the same rows.
    """
    import statistics

    from .bare import bare_duckdb, digest

    ratios: list[float] = []
    for i in range(pairs):
        run = run_pipeline(f"duckdb pair {i}", "duckdb", events, workdir)
        bare = bare_duckdb(events, workdir / f"bare_{i}.duckdb", SEED, START)
        assert run.path is not None
        with contextlib.closing(duckdb.connect(str(run.path), read_only=True)) as con:
            rows, dig = digest(con)
        same = (rows, dig) == (bare.rows, bare.digest)
        ratios.append(run.streaming_rate / bare.rate)
        console.print(
            f"  pair {i}: pipeline {run.streaming_rate:,.0f} ev/s streaming "
            f"({run.streaming_s:.2f} s), bare DuckDB {bare.rate:,.0f} ev/s ({bare.seconds:.2f} s, "
            f"{bare.batches} batches): {ratios[-1]:.2f}; the same rows: "
            f"{'yes' if same else 'NO'} ({rows:,} rows, digest {dig}"
            + ("" if same else f" vs {bare.rows:,} rows, {bare.digest}")
            + ")"
        )
        if not same:
            raise SystemExit("bench: the pipeline and bare DuckDB ended with different rows")
    ratio = statistics.median(ratios)
    console.print(
        f"DuckDB pipeline / bare DuckDB doing the same work ({events:,} events, {pairs} pairs, "
        f"median): [bold]{ratio:.2f}[/] ({', '.join(f'{r:.2f}' for r in ratios)}); "
        f"target >= 0.85: {'met' if ratio >= 0.85 else 'NOT met'}"
    )
    return ratio


def main(ns: argparse.Namespace) -> int:
    console = Console()
    workdir = Path(ns.workdir) if ns.workdir else Path(tempfile.mkdtemp(prefix="ecomm-cdc-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    n = ns.events
    console.print(
        f"[bold]ecomm-cdc bench[/]: {n:,} events, seed {SEED}, {os.cpu_count()} cores, "
        f"Python {sys.version.split()[0]}, files in {workdir}"
    )
    results = [
        run_pipeline("null sink", "null", n, workdir),
        run_pipeline("duckdb", "duckdb", n, workdir),
        seed_way(ns.seed_way_events, workdir),
    ]
    table = Table(title="throughput (one run)")
    for col in (
        "what", "events", "seconds", "events/s", "peak RSS MB", "streaming s", "streaming ev/s",
        "start-up s",
    ):  # fmt: skip
        table.add_column(col, justify="right" if col != "what" else "left")
    for m in results:
        streaming = (
            (f"{m.streaming_s:.2f}", f"{m.streaming_rate:,.0f}", f"{m.startup_s:.2f}")
            if m.streaming_s
            else ("", "", "")
        )
        table.add_row(
            m.label,
            f"{m.events:,}",
            f"{m.seconds:.2f}",
            f"{m.rate:,.0f}",
            f"{m.peak_rss_mb:.0f}",
            *streaming,
        )
    console.print(table)
    null, duck, seed = results
    console.print(
        f"null sink, steady (start-up excluded): [bold]{null.streaming_rate:,.0f}[/] ev/s "
        f"(start-up {null.startup_s:.2f} s); target >= 1,000,000: "
        f"{'met' if null.streaming_rate >= 1_000_000 else 'NOT met'}"
    )
    bare_ratio(n, workdir, console, ns.bare_pairs)
    console.print(f"batched DuckDB pipeline / seed's way: [bold]{duck.rate / seed.rate:,.0f}x[/]")
    console.print(
        f"targets: DuckDB >= 100,000 ev/s: {duck.rate:,.0f} "
        f"({'met' if duck.rate >= 100_000 else 'NOT met'}); null >= 200,000 ev/s: {null.rate:,.0f} "
        f"({'met' if null.rate >= 200_000 else 'NOT met'}); peak RSS <= 300 MB: "
        f"{max(null.peak_rss_mb, duck.peak_rss_mb):.0f} MB "
        f"({'met' if max(null.peak_rss_mb, duck.peak_rss_mb) <= 300 else 'NOT met'})"
    )
    queried_ratio(n, workdir, console)
    if ns.rss_events:
        long = run_pipeline("duckdb, long", "duckdb", ns.rss_events, workdir)
        points = long.rss_by_events
        at_1m = next((rss for ev, rss in points if ev >= 1_000_000), None)
        if at_1m is not None and points:
            last = points[-1]
            console.print(
                f"RSS over the run ({ns.rss_events:,} events, DuckDB): {at_1m:.0f} MB at 1M "
                f"events, {last[1]:.0f} MB at {last[0]:,} (growth {last[1] - at_1m:+.0f} MB); "
                + (
                    f"{long.rss_at_end:.0f} MB at the end, after the final refresh; "
                    if long.rss_at_end is not None
                    else ""
                )
                + f"peak {long.peak_rss_mb:.0f} MB"
            )
    return 0
