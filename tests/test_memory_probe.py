"""The in-process memory figures of the throughput lines measure what they name."""

from __future__ import annotations

import duckdb
import pytest

from service.watch import memory


def test_the_c_heap_figure_sees_an_allocation() -> None:
    before = memory.sample()
    if "heap_in_use_mb" not in before:
        pytest.fail("mallinfo2 is not available: this is not glibc >= 2.33")
    block = bytearray(64 * 2**20)  # malloc'd by Python's raw allocator
    during = memory.sample()
    assert during["heap_in_use_mb"] - before["heap_in_use_mb"] >= 60
    assert during["rss_mb"] - before["rss_mb"] >= 60  # bytearray() zero-fills: resident
    del block
    after = memory.sample()
    assert during["heap_in_use_mb"] - after["heap_in_use_mb"] >= 60


def test_duckdb_reports_its_own_memory() -> None:
    con = duckdb.connect()
    empty = memory.duckdb_mb(con)
    con.execute("CREATE TABLE t AS SELECT range AS i, range::VARCHAR AS s FROM range(2000000)")
    held = memory.duckdb_mb(con)
    assert empty is not None and held is not None
    assert held - empty > 10
    con.close()
    assert memory.duckdb_mb(con) is None  # a closed connection: no figure, no exception
