"""The generator in a child process hands out exactly the in-process stream."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from service.events import Op
from service.generator import OrderStream
from service.source import GeneratorDied, ProcessSource

from .conftest import identity


def test_the_child_process_yields_the_same_events_in_any_take_sizes() -> None:
    """Blocks from the child, cut into odd takes, equal the in-process stream; counts agree."""
    n = 30_000
    expected = OrderStream(identity()).take(n)

    async def main() -> list[object]:
        src = ProcessSource(identity(), n)
        got: list[object] = []
        try:
            for size in (1, 999, 8192, 5000, 10_000, n):
                got += await src.take(min(size, n - len(got)))
                if len(got) == n:
                    break
            assert src.seq == n
            assert sum(src.counts.values()) == n
            assert src.counts[Op.INSERT] == sum(1 for e in expected if e.op is Op.INSERT)
        finally:
            src.close()
        return got

    assert asyncio.run(main()) == expected


def test_a_dead_generator_process_is_an_error_not_a_hang() -> None:
    """SIGKILL the child: the next take raises GeneratorDied instead of waiting forever."""

    async def main() -> None:
        src = ProcessSource(identity(), None)
        try:
            await src.take(100)
            os.kill(src._proc.pid, signal.SIGKILL)  # type: ignore[arg-type]
            with pytest.raises(GeneratorDied):
                for _ in range(1000):  # drain what was already in the pipe
                    await asyncio.wait_for(src.take(8192), 30)
        finally:
            src.close()

    asyncio.run(main())
