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


def test_the_fixed_mmap_threshold_gives_freed_blocks_back() -> None:
    """Blocks of DuckDB's size, freed after a larger one was: with the threshold fixed each
    is mapped on its own and RSS drops when they go (glibc's dynamic threshold would have
    moved them into the heap, where freeing keeps them). Run in a child: the setting is
    the process's."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import ctypes, sys
        from service.watch import memory
        if sys.argv[1] == "fixed":
            assert memory.fix_mmap_threshold()
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        big = libc.malloc(8 * 2**20)   # freeing a mapped 8 MB block raises the dynamic threshold
        libc.free(big)
        blocks = [libc.malloc(256 * 1024) for _ in range(400)]  # 100 MB of 256 KiB blocks
        for b in blocks:
            ctypes.memset(b, 1, 256 * 1024)
        held = memory.sample()["rss_mb"]
        for b in blocks[::2]:  # every other one: holes a heap cannot give back
            libc.free(b)
        print(held - memory.sample()["rss_mb"])
        """
    )
    given_back = {
        how: float(
            subprocess.run(
                [sys.executable, "-c", code, how], capture_output=True, text=True, check=True
            ).stdout
        )
        for how in ("fixed", "dynamic")
    }
    assert given_back["fixed"] >= 45, given_back
    assert given_back["dynamic"] < 10, given_back
