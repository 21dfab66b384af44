"""A target that is not ecomm-cdc's is refused before anything in it changes: exit 2, one line."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import duckdb
import pytest

from service.pipeline.generator import replay

from .conftest import START, cli, identity
from .emulator import Server
from .helpers import duckdb_rows

# Another program's orders table: its own columns (a bare NUMBER amount, as the seed made it).
THEIRS = (
    "CREATE TABLE raw_orders (order_id VARCHAR, customer VARCHAR, placed TIMESTAMP, "
    "total DECIMAL(18, 0))"
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table of a DuckDB file and its rows, sorted."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        names = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {n: sorted(con.execute(f'SELECT * FROM "{n}"').fetchall()) for n in names}  # noqa: S608
    finally:
        con.close()


def _refused(args: list[str], culprit: str) -> str:
    r = cli(*args)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert culprit in lines[0] and "Traceback" not in r.stdout + r.stderr
    return lines[0]


def test_another_programs_duckdb_file_is_refused_unchanged(tmp_path: Path) -> None:
    """A DuckDB file with its own raw_orders (and more): run, init and report exit 2;
    every table of it is unchanged, and nothing of ours was added."""
    db = tmp_path / "theirs.duckdb"
    con = duckdb.connect(str(db))
    con.execute(THEIRS)
    con.execute("INSERT INTO raw_orders VALUES ('A1', 'c', TIMESTAMP '2024-01-01', 12)")
    con.execute("CREATE TABLE invoices (id INTEGER, paid BOOLEAN)")
    con.execute("INSERT INTO invoices VALUES (1, true), (2, false)")
    con.close()
    before = _tables(db)
    for command in ("run", "init", "report"):
        extra = ["--events", "100", "--seed", "7", "--start", START] if command == "run" else []
        line = _refused([command, "--duckdb-path", str(db), *extra], "--duckdb-path")
        assert "another program's tables" in line and "nothing was changed" in line
    assert _tables(db) == before


def test_a_table_of_our_name_with_another_shape_is_refused(tmp_path: Path) -> None:
    """An ecomm-cdc file whose raw_orders was replaced by another shape: exit 2 naming it."""
    db = tmp_path / "ours.duckdb"
    assert cli("run", "--events", "500", "--duckdb-path", str(db)).returncode == 0
    con = duckdb.connect(str(db))
    con.execute("DROP TABLE raw_orders")
    con.execute(THEIRS)
    con.close()
    before = _tables(db)
    line = _refused(["run", "--events", "1000", "--duckdb-path", str(db)], "--duckdb-path")
    assert "table raw_orders that is not ecomm-cdc's" in line
    assert _tables(db) == before


@pytest.mark.parametrize("kind", ["sqlite", "text", "truncated"])
def test_a_file_that_is_not_a_duckdb_database_is_refused_unchanged(
    tmp_path: Path, kind: str
) -> None:
    """A SQLite database, a text file, a truncated DuckDB file: exit 2, one line, the file's
    bytes unchanged, and DuckDB never tries to fetch an extension for it."""
    path = tmp_path / f"{kind}.duckdb"
    if kind == "sqlite":
        s = sqlite3.connect(path)
        s.execute("CREATE TABLE t (x)")
        s.commit()
        s.close()
    elif kind == "text":
        path.write_text("order_id,amount\nA1,12\n")
    else:
        good = tmp_path / "good.duckdb"
        assert cli("run", "--events", "2000", "--duckdb-path", str(good)).returncode == 0
        path.write_bytes(good.read_bytes()[:20_000])
    digest = _digest(path)
    line = _refused(["run", "--events", "100", "--duckdb-path", str(path)], "--duckdb-path")
    assert "extension" not in line.lower()
    assert _digest(path) == digest
    assert not path.with_suffix(".duckdb.wal").exists()


def test_the_earliest_start_runs_and_verifies(tmp_path: Path) -> None:
    """--start 1970-01-01 (orders backdated into 1969, before the epoch) is accepted whole:
    the table is the replay and verify passes."""
    db = tmp_path / "early.duckdb"
    start = "1970-01-01T00:00:00"
    r = cli("run", "--events", "3000", "--seed", "7", "--start", start, "--duckdb-path", str(db))
    assert r.returncode == 0, r.stderr
    assert cli("verify", "--duckdb-path", str(db)).returncode == 0
    rows = duckdb_rows(db)
    assert min(int(str(v[2])) for v in rows.values()) < 0, "orders before the epoch"
    from service.pipeline.generator import GeneratorSettings, StreamIdentity

    assert rows == replay(StreamIdentity(7, 0, "0", 64, GeneratorSettings()), 3000)


def test_a_snowflake_schema_with_another_raw_orders_is_refused_unchanged() -> None:
    """The emulator schema already has someone's raw_orders: exit 2 naming the schema,
    that table's rows unchanged, none of our tables created."""
    with Server() as server:
        server.query(THEIRS.replace("TIMESTAMP", "TIMESTAMP_NTZ"))
        server.query("INSERT INTO raw_orders VALUES ('A1', 'c', '2024-01-01', 12)")
        r = cli("run", "--target", "snowflake", "--events", "100", env=server.env())
        assert r.returncode == 2, (r.stdout[-2000:], r.stderr)
        assert "SNOWFLAKE_SCHEMA" in r.stderr and "raw_orders" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert server.query("SELECT order_id, total FROM raw_orders") == [("A1", 12)]
        tables = {
            t[0].lower()
            for t in server.query(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'PUBLIC'"
            )
        }
        assert tables == {"raw_orders"}
    assert identity() is not None
