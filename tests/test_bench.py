"""The benchmark runs end to end and prints its figures (it asserts no timing)."""

from __future__ import annotations

import re
from pathlib import Path

from .conftest import cli


def test_bench_prints_rates_ratio_and_rss(tmp_path: Path) -> None:
    """A small bench run: every row has a rate, and the ratios and the targets are printed."""
    r = cli(
        "bench",
        "--events",
        "20000",
        "--seed-way-events",
        "200",
        "--rss-events",
        "0",
        "--workdir",
        str(tmp_path),
        env={"COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    for label in ("null sink", "duckdb", "seed's way"):
        row = next(line for line in out.splitlines() if label in line)
        assert re.search(r"\d[\d,]* +│ +[\d.]+ +│ +[\d,]+ +│ +\d+", row), row
    assert re.search(r"seed's way: \d[\d,]*x", out)
    assert "peak RSS <= 300 MB" in out
    assert re.search(
        r"queried every second / unqueried \(DuckDB, 20,000 events, 3 runs each\): [\d.]+", out
    )


def test_bench_long_prints_each_figure_at_two_ages(tmp_path: Path) -> None:
    """A small --long run: the memory run's peak, and for resume, refresh and verify a figure
    at each age and their ratio (the scales follow --long-events)."""
    r = cli("bench", "--long", "--long-events", "60000", "--workdir", str(tmp_path),
            env={"COLUMNS": "200"})  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r"memory over 60,000 events: exit 0, peak RSS \d+ MB", out), out
    for what in ("resume: launch to first applied event (200 vs 20,000)",
                 "refresh after 10,000 more events (2,000 vs 20,000)",
                 "verify: peak RSS (2,000 vs 20,000)", "verify: seconds (2,000 vs 20,000)"):  # fmt: skip
        row = next(line for line in out.splitlines() if what in line)
        assert re.search(r"│ +[\d.,]+ (s|MB) +│ +[\d.,]+ (s|MB) +│ +[\d.]+x", row), row
    assert re.search(
        r"verify of the big target: [\d.]+ s, the run that built it [\d.]+ s: [\d.]+x \(ok\)", out
    )
