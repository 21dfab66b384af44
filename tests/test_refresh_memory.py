"""A refresh of the local layers at scale: more memory while it runs, and a full rebuild (which
streams) instead of deltas (which hold the changed ids) when very many orders changed."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from service.retry import Phase
from service.sinks.base import SqlSession
from service.sinks.duckdb import REFRESH_HEADROOM_MB, DuckDBSink, DuckSession
from service.warehouse import decompose, deltas, sqlfiles

from .conftest import START, cli

_UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def _limit_mb(session: SqlSession) -> float:
    """DuckDB's memory limit in MB (10**6 bytes, as ``SET memory_limit = '...MB'`` counts)."""
    row = session.execute("SELECT current_setting('memory_limit')").fetchone()
    text = str(row[0])
    found = re.fullmatch(r"([\d.]+) (KiB|MiB|GiB)", text)
    assert found, text
    return float(found.group(1)) * _UNITS[found.group(2)] / 1e6


def test_a_refresh_runs_with_headroom_and_the_limit_comes_back(tmp_path: Path) -> None:
    sink = DuckDBSink(tmp_path / "t.duckdb", workers=4)
    sink.open()
    try:
        writers = sink.run(_limit_mb, "reading the limit", Phase.QUERY)
        refreshing = sink.run(_limit_mb, "reading the limit", Phase.REFRESH)
        assert writers == pytest.approx(sink.memory_mb, abs=0.6)
        assert refreshing == pytest.approx(sink.memory_mb + REFRESH_HEADROOM_MB, abs=0.6)

        def failing(session: SqlSession) -> None:
            raise duckdb.OutOfMemoryException("out of memory, as a rebuild can")

        with pytest.raises(duckdb.OutOfMemoryException):
            sink.run(failing, "refreshing", Phase.REFRESH)
        # Put back after a failed refresh too, and seen by the writers' own cursors.
        assert _limit_mb(DuckSession(sink.con.cursor())) == pytest.approx(writers, abs=0.01)
    finally:
        sink.close()


def test_very_many_changes_rebuild_whatever_the_tables_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.duckdb"
    done = cli("run", "--events", "20000", "--seed", "7", "--start", START,
               "--duckdb-path", str(path), "--no-progress")  # fmt: skip
    assert done.returncode == 0, done.stderr
    con = duckdb.connect(str(path))
    try:
        session, plan = DuckSession(con), decompose.plan(sqlfiles.layers())
        assert plan is not None
        assert deltas.covered(session, plan)  # the run's final refresh left nothing logged
        monkeypatch.setattr(deltas, "REBUILD_CHANGES", 100)
        log = f"INSERT INTO {deltas.CHANGES} SELECT order_id FROM raw_orders LIMIT ?"  # noqa: S608
        con.execute(log, [100])
        assert deltas.covered(session, plan)  # 100 of ~11,000 rows: by deltas
        con.execute(log, [1])
        assert not deltas.covered(session, plan)  # 101: rebuilt, far below a quarter
    finally:
        con.close()
