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
