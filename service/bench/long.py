"""``ecomm-cdc bench --long``: what a long-running service costs, at two ages, as ratios.

Every figure is a real ``ecomm-cdc run`` or ``ecomm-cdc verify`` in a child
process, its RSS sampled from outside with psutil (as in :mod:`service.bench.pipeline`);
times come from the child's own log lines. ``--long-events`` (L, 30M by
default) sets every scale: the memory run streams L events; the targets hold
L/3 ("big", 10M), L/30 ("small", 1M) and L/300 ("tiny", 100k) events.

- memory: peak RSS over the L-event run, and over its first third against the rest;
- resume: from launch to the first applied event, on the tiny and the big target;
- refresh: the local refresh after 10,000 more events, on the small and the big target
  (each the median of three resumes, each adding 10,000 events);
- verify: peak RSS and time on the small and the big target, and against the run that
  produced each.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from rich.console import Console
from rich.table import Table

from .pipeline import PeakRss

START = "2026-01-01T00:00:00"
SEED = 7
MORE = 10_000  # events added to a target to measure a resume and a refresh
REPEAT = 3  # resumes per target (medians)


@dataclass
class Child:
    """What one child process did: its log records, its RSS, its wall time."""

    code: int
    seconds: float  # launch to exit
    launched: dt.datetime  # UTC
    peak_rss_mb: float
    records: list[dict[str, Any]] = field(default_factory=list)
    rss_by_events: list[tuple[int, float]] = field(default_factory=list)
    stderr: str = ""
    stdout_tail: str = ""

    def first(self, event: str) -> dict[str, Any] | None:
        return next((r for r in self.records if r.get("event") == event), None)

    def last(self, event: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r.get("event") == event), None)

    def since_launch(self, record: dict[str, Any]) -> float:
        at = dt.datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00"))
        return (at - self.launched).total_seconds()

    def failure(self) -> str:
        failed = self.first("service.failed")
        text = failed["error"] if failed else (self.stderr.strip() or self.stdout_tail)[-300:]
        return f"exit {self.code}: {text}"


def spawn(args: list[str], memory_mb: int | None, debug: bool = False) -> Child:
    """Run ``python -m service ARGS``; sample its RSS every 50 ms and at each throughput line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CDC_", "SNOWFLAKE_"))}
    env.update(CDC_HTTP_PORT="0", CDC_LOG_FORMAT="json", COLUMNS="200")
    if memory_mb:
        env["CDC_DUCKDB_MEMORY_MB"] = str(memory_mb)
    if debug:
        env["CDC_LOG_LEVEL"] = "debug"  # one line per committed batch: the first is the resume
    launched = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    rss = PeakRss(proc.pid)
    records: list[dict[str, Any]] = []
    by_events: list[tuple[int, float]] = []
    tail: list[str] = []
    committed = False
    assert proc.stdout is not None
    for line in proc.stdout:
        if not line.startswith("{"):
            tail = [*tail[-20:], line]
            continue
        rec = json.loads(line)
        if rec.get("event") == "pipeline.throughput":
            with contextlib.suppress(psutil.Error):
                by_events.append((int(rec["generated"]), rss.now()))
        if rec.get("event") == "sink.batch_committed":
            if committed:
                continue  # only the first is kept: a long run commits thousands
            committed = True
        records.append(rec)
    proc.wait()
    seconds = time.perf_counter() - t0
    peak = rss.stop()
    err = proc.stderr.read() if proc.stderr else ""
    return Child(proc.returncode, seconds, launched, peak, records, by_events, err, "".join(tail))


def _run_args(db: Path, events: int) -> list[str]:
    return ["run", "--events", str(events), "--seed", str(SEED), "--start", START,
            "--duckdb-path", str(db), "--no-progress"]  # fmt: skip


def _fresh(db: Path) -> Path:
    for p in (db, db.with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)
    return db


@dataclass
class Target:
    """A target built by one run of the service."""

    label: str
    events: int
    db: Path
    built: Child

    @property
    def ok(self) -> bool:
        return self.built.code == 0

    @property
    def run_seconds(self) -> float:
        summary = self.built.last("pipeline.summary")
        return float(summary["elapsed_s"]) if summary else self.built.seconds


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else "n/a"


def _fmt(v: float | None, unit: str = "", digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}{unit}"


#: The memory run's RSS is read per ninth of the run (10M-event windows at 90M).
WINDOWS = 9


def memory(console: Console, workdir: Path, events: int, memory_mb: int | None) -> None:
    """RSS per ninth of the long run (sampled at each throughput line): the last third's
    against the second and third ninths (60-90M vs 10-30M at 90M events; the first ninth
    is the warm-up), and every refresh the run made, with its state."""
    child = spawn(_run_args(_fresh(workdir / "long.duckdb"), events), memory_mb)
    reached = child.rss_by_events[-1][0] if child.rss_by_events else 0
    head = f"memory over {events:,} events: "
    if child.code != 0:
        console.print(
            f"{head}[bold red]FAILED[/] after about {reached:,} events ({child.failure()}); "
            f"peak RSS {child.peak_rss_mb:.0f} MB"
        )
    width = max(1, events // WINDOWS)
    windows: list[list[float]] = [[] for _ in range(WINDOWS)]
    for ev, rss in child.rss_by_events:
        windows[min(WINDOWS - 1, max(0, ev - 1) // width)].append(rss)
    # Where the memory is, as the service reports it on each throughput line (medians).
    parts = ("heap_in_use_mb", "heap_free_mb", "duckdb_mb", "arrow_mb", "python_blocks_k")
    inside: list[dict[str, list[float]]] = [{k: [] for k in parts} for _ in range(WINDOWS)]
    for rec in child.records:
        if rec.get("event") == "pipeline.throughput":
            at = inside[min(WINDOWS - 1, max(0, int(rec["generated"]) - 1) // width)]
            for k in parts:
                if isinstance(rec.get(k), int | float):
                    at[k].append(float(rec[k]))
    table = Table(title=f"RSS per {width:,}-event window (MB, at throughput lines)")
    for col in ("events", "samples", "RSS median", "RSS highest", "C heap in use",
                "C heap free", "DuckDB", "Arrow", "Python blocks (k)"):  # fmt: skip
        table.add_column(col, justify="right")
    for i, w in enumerate(windows):
        table.add_row(
            f"{i * width / 1e6:g}M-{(i + 1) * width / 1e6:g}M",
            str(len(w)),
            _fmt(statistics.median(w) if w else None, "", 0),
            _fmt(max(w, default=None), "", 0),
            *(_fmt(statistics.median(v) if v else None, "", 0) for v in inside[i].values()),
        )
    console.print(table)
    early = windows[1] + windows[2]
    late = [r for w in windows[6:] for r in w]
    med = {k: statistics.median(v) if v else None for k, v in (("early", early), ("late", late))}
    hi = {k: max(v, default=None) for k, v in (("early", early), ("late", late))}
    e1, e3, e6 = (f"{width * k / 1e6:g}M" for k in (1, 3, 6))
    ratio = (med["late"] / med["early"]) if med["late"] and med["early"] else None
    verdict = "n/a" if ratio is None else ("met" if ratio <= 1.10 else "NOT met")
    console.print(
        f"{head}exit {child.code}, peak RSS [bold]{child.peak_rss_mb:.0f} MB[/]; median RSS "
        f"{e6}-end {_fmt(med['late'], ' MB', 0)} vs {e1}-{e3} {_fmt(med['early'], ' MB', 0)}: "
        f"[bold]{_ratio(med['late'], med['early'])}[/] (highest {_fmt(hi['late'], ' MB', 0)} vs "
        f"{_fmt(hi['early'], ' MB', 0)}: {_ratio(hi['late'], hi['early'])}); target: within "
        f"10 % ({verdict})"
    )
    refreshes = [r for r in child.records if r.get("event") == "warehouse.refresh"]
    states = [str(r.get("state")) for r in refreshes]
    ok = states.count("SUCCEEDED")
    last = refreshes[-1] if refreshes else None
    console.print(
        f"refreshes during the run: {ok} of {len(states)} SUCCEEDED"
        + (
            f"; the final one: {last.get('state')} on {int(last.get('rows') or 0):,} rows in "
            f"{float(last.get('seconds') or 0):.1f} s"
            if last
            else ""
        )
        + "".join(
            f"; FAILED at {r.get('scheduled')}: {str(r.get('error', ''))[:200]}"
            for r in refreshes
            if r.get("state") != "SUCCEEDED"
        )
    )


def build(workdir: Path, label: str, events: int, memory_mb: int | None) -> Target:
    db = _fresh(workdir / f"target_{label}.duckdb")
    return Target(label, events, db, spawn(_run_args(db, events), memory_mb))


def main(ns: argparse.Namespace) -> int:
    console = Console()
    workdir = Path(ns.workdir) if ns.workdir else Path(tempfile.mkdtemp(prefix="ecomm-cdc-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    big = ns.long_events // 3
    small, tiny = big // 10, big // 100
    mem = ns.long_memory_mb
    console.print(
        f"[bold]ecomm-cdc bench --long[/]: memory run {ns.long_events:,} events; targets "
        f"{tiny:,} / {small:,} / {big:,} events; seed {SEED}, {os.cpu_count()} cores; DuckDB "
        f"memory of the memory run and the builds "
        f"{f'{mem} MB (--long-memory-mb)' if mem else 'the default'}, of the rest the "
        f"default; files in {workdir}"
    )
    memory(console, workdir, ns.long_events, mem)
    if ns.long_memory_only:
        return 0
    targets = {t.label: t for t in (build(workdir, n, e, mem) for n, e in
               (("tiny", tiny), ("small", small), ("big", big)))}  # fmt: skip
    for t in targets.values():
        if not t.ok:
            console.print(
                f"building the {t.label} target ({t.events:,} events) FAILED: {t.built.failure()}"
            )
    # Verify and resume on the default settings, whatever built the targets.
    verified = {k: verify(targets[k]) for k in ("small", "big") if targets[k].ok}
    # Each target resumed REPEAT times, MORE events each: the medians are the figures (a
    # single refresh of a fraction of a second varies by 2x from run to run here).
    resumed = {k: [spawn(_run_args(t.db, t.events + MORE * (i + 1)), None, debug=True)
                   for i in range(REPEAT)] for k, t in targets.items() if t.ok}  # fmt: skip
    table = Table(title="long-run costs at two ages (one run)")
    for col in ("what", "younger", "older", "older / younger"):
        table.add_column(col, justify="left" if col == "what" else "right")

    def row(what: str, young: float | None, old: float | None, unit: str) -> None:
        table.add_row(what, _fmt(young, unit), _fmt(old, unit), _ratio(old, young))

    starts = {k: _median([_resume_seconds(c) for c in cs]) for k, cs in resumed.items()}
    row(f"resume: launch to first applied event ({tiny:,} vs {big:,})",
        starts.get("tiny"), starts.get("big"), " s")  # fmt: skip
    refreshes = {k: _median([_refresh_seconds(c) for c in cs]) for k, cs in resumed.items()}
    row(f"refresh after {MORE:,} more events ({small:,} vs {big:,})",
        refreshes.get("small"), refreshes.get("big"), " s")  # fmt: skip
    v = {k: c for k, c in verified.items() if c.code in (0, 1)}
    row(
        f"verify: peak RSS ({small:,} vs {big:,})",
        _peak(v.get("small")),
        _peak(v.get("big")),
        " MB",
    )
    row(f"verify: seconds ({small:,} vs {big:,})", _secs(v.get("small")), _secs(v.get("big")), " s")
    console.print(table)
    for k, c in v.items():
        t = targets[k]
        console.print(
            f"verify of the {k} target: {c.seconds:.1f} s, the run that built it "
            f"{t.run_seconds:.1f} s: [bold]{_ratio(c.seconds, t.run_seconds)}[/] "
            f"({'ok' if c.code == 0 else 'FAILED: differences'})"
        )
    for k, c in verified.items():
        if c.code not in (0, 1):
            console.print(f"verify of the {k} target: {c.failure()}")
    for k, cs in resumed.items():
        for c in cs:
            if c.code != 0:
                console.print(f"resuming the {k} target: {c.failure()}")
    return 0


def verify(target: Target) -> Child:
    return spawn(["verify", "--target", "duckdb", "--duckdb-path", str(target.db)], None)


def _resume_seconds(c: Child) -> float | None:
    first = c.first("sink.batch_committed")
    return c.since_launch(first) if first else None


def _refresh_seconds(c: Child) -> float | None:
    last = c.last("warehouse.refresh")
    return float(last["seconds"]) if last and last.get("state") == "SUCCEEDED" else None


def _median(values: list[float | None]) -> float | None:
    known = sorted(v for v in values if v is not None)
    return statistics.median(known) if known else None


def _peak(c: Child | None) -> float | None:
    return c.peak_rss_mb if c else None


def _secs(c: Child | None) -> float | None:
    return c.seconds if c else None
