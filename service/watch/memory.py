"""Where this process's memory is, sampled in-process for the throughput lines.

Resident set size alone does not say who holds it. Beside it: the C heap as glibc
sees it (in use, and free but still held: fragmentation), what Arrow's pool holds,
and what Python's allocator holds. DuckDB allocates through its own allocator
(outside glibc's heap); its buffer pool is bounded by ``memory_limit`` and reported
by ``duckdb_memory()``, which needs a connection: :func:`duckdb_mb` takes one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any

import psutil
import pyarrow as pa

_MB = 2**20


_FIELDS = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _FIELDS.split()]


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):  # not glibc, or a glibc before 2.33
        return None
    return lib


_LIBC = _libc()
_M_MMAP_THRESHOLD = -3
#: Allocations from this size up get pages of their own, returned to the system when freed.
MMAP_THRESHOLD = 128 * 1024


def fix_mmap_threshold() -> bool:
    """Keep glibc's mmap threshold at 128 KiB (False where that cannot be set).

    By default glibc raises the threshold each time a mapped block is freed (up to 32 MB),
    after which DuckDB's 256 KiB blocks come from the arenas, and their holes stay with the
    process: over 90M events the C heap's free-but-held memory grew from 31 to 57 MB
    (most of the RSS climb). Fixed, a block's pages go back when it is freed: at 10M events
    free-but-held stayed at 5-8 MB where it had reached 26 MB, RSS 245 MB where it was 275.
    """
    if _LIBC is None:
        return False
    return bool(_LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def sample() -> dict[str, float]:
    """RSS and the heaps, in MB (the C heap's figures only on glibc)."""
    out = {
        "rss_mb": round(psutil.Process().memory_info().rss / _MB, 1),
        "arrow_mb": round(pa.total_allocated_bytes() / _MB, 1),
        "python_blocks_k": round(sys.getallocatedblocks() / 1000, 1),
    }
    if _LIBC is not None:
        info = _LIBC.mallinfo2()
        # uordblks: in use in the arenas; hblkhd: in mmap'd chunks; fordblks: free, held.
        out["heap_in_use_mb"] = round((info.uordblks + info.hblkhd) / _MB, 1)
        out["heap_free_mb"] = round(info.fordblks / _MB, 1)
    return out


def duckdb_mb(session: Any) -> float | None:
    """DuckDB's own accounting of its memory (``duckdb_memory()``), in MB."""
    try:
        row = session.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchone()
    except Exception:
        return None
    return round(float(row[0] or 0) / _MB, 1) if row else None
