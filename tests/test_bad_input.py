"""Bad input: exit 2, one line naming the setting, no traceback, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from .conftest import cli


@pytest.mark.parametrize(
    ("args", "env", "culprit"),
    [
        ((), {"CDC_BATCH_SIZE": "lots"}, "CDC_BATCH_SIZE"),
        ((), {"CDC_BATCH_SIZE": "-5"}, "CDC_BATCH_SIZE"),
        (("--batch-size", "0"), {}, "--batch-size"),
        (("--workers", "0"), {}, "--workers"),
        (("--target", "oracle"), {}, "--target"),
        (("--start", "yesterday-ish"), {}, "--start"),
        ((), {"CDC_START": "2026-13-45T00:00:00"}, "CDC_START"),
        ((), {"CDC_HTTP_PORT": "70000"}, "CDC_HTTP_PORT"),
        ((), {"CDC_SHUTDOWN_TIMEOUT": "-1"}, "CDC_SHUTDOWN_TIMEOUT"),
        ((), {"CDC_LOG_FORMAT": "xml"}, "CDC_LOG_FORMAT"),
        ((), {"CDC_QUEUE_SIZE": "1e3x"}, "CDC_QUEUE_SIZE"),
        ((), {"CDC_SHARD": "a-b"}, "CDC_SHARD"),
        ((), {"CDC_BATCHSIZE": "10"}, "CDC_BATCHSIZE"),
        # Outside what the whole pipeline supports (generator, DuckDB, TIMESTAMP_NTZ, verify).
        (("--start", "9999-12-31T23:59:59"), {}, "--start"),
        (("--start", "1969-12-31T23:59:59"), {}, "--start"),
        (("--rate", "inf"), {}, "--rate"),
        ((), {"CDC_RATE": "nan"}, "CDC_RATE"),
        (("--duration", "inf"), {}, "--duration"),
        (("--seed", str(2**64)), {}, "--seed"),
        ((), {"CDC_REFRESH_INTERVAL": "0"}, "CDC_REFRESH_INTERVAL"),
        ((), {"CDC_STALL_TIMEOUT": "1e300"}, "CDC_STALL_TIMEOUT"),
    ],
)
def test_bad_setting_exits_2_with_one_line(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], culprit: str
) -> None:
    """Each bad value: exit 2, a single stderr line naming the flag or variable."""
    db = tmp_path / "x.duckdb"
    r = cli(
        "run",
        "--events",
        "10",
        "--duckdb-path",
        str(db),
        *args,
        env={**env, "CDC_HTTP_PORT": env.get("CDC_HTTP_PORT", "0")},
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert culprit in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    assert not db.exists(), "nothing was written"


def test_the_flag_wins_over_the_variable(tmp_path: Path) -> None:
    """CDC_WORKERS=0 is overridden by --workers 2 (and the run succeeds)."""
    r = cli(
        "run",
        "--events",
        "100",
        "--workers",
        "2",
        "--duckdb-path",
        str(tmp_path / "f.duckdb"),
        env={"CDC_WORKERS": "0"},
    )
    assert r.returncode == 0, r.stderr
    assert '"workers": 2' in r.stdout


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unwritable_duckdb_path_exits_2(tmp_path: Path, where: str) -> None:
    """A DuckDB path that cannot be created: exit 2 naming --duckdb-path, no traceback."""
    if where == "file":
        blocker = tmp_path / "not-a-dir"
        blocker.write_text("x")
        path = blocker / "ecomm.duckdb"  # a file where a folder should be
    else:
        path = Path("/proc/ecomm-cdc/ecomm.duckdb")  # not creatable, even for root
    r = cli("run", "--events", "10", "--duckdb-path", str(path))
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--duckdb-path" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stdout + r.stderr


def test_a_stream_that_would_date_orders_past_year_9999_is_refused(tmp_path: Path) -> None:
    """--events so many that the simulated clock passes 9999: exit 2 naming --events."""
    db = tmp_path / "far.duckdb"
    r = cli(
        "run", "--events", str(10**13), "--start", "2999-06-01T00:00:00", "--duckdb-path", str(db)
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.startswith("ecomm-cdc: error: --events: ") and "9999" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not db.exists()
