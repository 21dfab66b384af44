"""The batcher alone, without an event loop: batches close on size or on time."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.batcher import Batcher
from service.pipeline.events import Chunk
from service.pipeline.generator import OrderStream

from .conftest import identity


def chunks(sizes: list[int]) -> list[Chunk]:
    stream = OrderStream(identity())
    out = []
    for n in sizes:
        changes = stream.take_changes(n)
        out.append((changes, changes.seq % 64))
    return out


def seqs(batches: list[Chunk]) -> list[int]:
    return [s for changes, _ in batches for s in changes.seq.tolist()]


def test_a_batch_closes_when_it_is_full_and_keeps_the_rest_open() -> None:
    """300 + 300 events with size 500: one batch of 500 at once, 100 held for later."""
    b = Batcher(size=500, linger=1.0)
    first, second = chunks([300, 300])
    assert b.add(first, now=0.0) == []
    out = b.add(second, now=0.1)
    assert [len(c) for c, _ in out] == [500]
    assert b.held == 100
    assert seqs(out) == list(range(1, 501))
    assert b.deadline() == 1.1, "the remainder waits its own linger from when it was opened"


def test_a_batch_closes_when_its_first_event_has_waited_the_linger() -> None:
    """Nothing closes before the linger; at the deadline everything held comes out."""
    b = Batcher(size=1000, linger=0.5)
    (one,) = chunks([10])
    b.add(one, now=2.0)
    assert not b.due(2.4) and b.deadline() == 2.5
    assert b.due(2.5)
    out = b.flush(2.5)
    assert [len(c) for c, _ in out] == [10] and b.held == 0 and b.deadline() is None


def test_a_flush_cuts_what_is_held_into_batches_of_at_most_size() -> None:
    """A flush of 1,250 held events with size 500 gives 500, 500, 250."""
    b = Batcher(size=500, linger=10.0)
    b.size = 10_000  # hold everything first
    for c in chunks([400, 450, 400]):
        b.add(c, now=0.0)
    b.size = 500
    out = b.flush(0.0)
    assert [len(c) for c, _ in out] == [500, 500, 250]
    assert seqs(out) == list(range(1, 1251))


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=12),
    size=st.integers(1, 900),
    gaps=st.lists(st.floats(0, 0.3), min_size=12, max_size=12),
)
def test_every_event_comes_out_once_in_order_and_no_batch_is_too_big(
    sizes: list[int], size: int, gaps: list[float]
) -> None:
    """Whatever the chunk sizes and timing, batches hold each event once, in order, <= size."""
    b = Batcher(size=size, linger=0.2)
    now, out = 0.0, []
    for chunk, gap in zip(chunks(sizes), gaps, strict=False):
        now += gap
        out += b.add(chunk, now)
        if b.due(now):
            out += b.flush(now)
    out += b.flush(now)
    assert seqs(out) == list(range(1, sum(sizes) + 1))
    assert all(0 < len(c) <= size for c, _ in out)
    for changes, parts in out:
        assert np.array_equal(parts, changes.seq % 64), "partitions travel with their events"
