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
        "--bare-pairs",
        "1",
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
    # The steady null-sink figure, start-up apart, and the streaming columns of the runs.
    assert re.search(
        r"null sink, steady \(start-up excluded\): [\d,]+ ev/s \(start-up [\d.]+ s\)", out
    )
    for label in ("null sink", "duckdb"):
        row = next(line for line in out.splitlines() if label in line)
        assert re.search(r"│ +\d+ +│ +[\d.]+ +│ +[\d,]+ +│ +[\d.]+ +│?$", row.rstrip()), row


def test_bench_bare_duckdb_line_has_its_ratio_and_the_same_rows(tmp_path: Path) -> None:
    """The yardstick: bare DuckDB applies the pipeline's batches and ends with the pipeline's
    rows (the digest is checked, and it tells a table one event short from the whole)."""
    r = cli(
        "bench", "--events", "20000", "--seed-way-events", "50", "--rss-events", "0",
        "--bare-pairs", "2", "--workdir", str(tmp_path), env={"COLUMNS": "200"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pairs = re.findall(
        r"pair \d: pipeline [\d,]+ ev/s streaming \([\d.]+ s\), bare DuckDB [\d,]+ ev/s "
        r"\([\d.]+ s, (\d+) batches\): ([\d.]+); the same rows: (\w+) \(([\d,]+) rows",
        r.stdout,
    )
    assert len(pairs) == 2, r.stdout
    for batches, ratio, same, rows in pairs:
        assert int(batches) >= 4 and float(ratio) > 0 and same == "yes"
        assert 0 < int(rows.replace(",", "")) < 20_000
    ratios = [float(p[1]) for p in pairs]
    line = re.search(r"bare DuckDB doing the same work \(20,000 events, 2 pairs, median\): "
                     r"([\d.]+)", r.stdout)  # fmt: skip
    assert line is not None, r.stdout
    assert abs(float(line.group(1)) - sum(ratios) / 2) < 0.011

    from service.bench.bare import bare_duckdb

    whole = bare_duckdb(20_000, tmp_path / "whole.duckdb", 7, "2026-01-01T00:00:00")
    short = bare_duckdb(19_999, tmp_path / "short.duckdb", 7, "2026-01-01T00:00:00")
    assert whole.digest != short.digest
    assert whole.rows == int(pairs[0][3].replace(",", ""))


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
