"""Net effect: the changes to one order within a batch collapse to one, with the same result."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.pipeline.events import Changes, Event, Op, order_id
from service.pipeline.generator import OrderStream, replay
from service.pipeline.net_effect import net_effect
from service.pipeline.router import partitions_of

from .conftest import identity


def ev(seq: int, op: Op, key: str, status: str = "PENDING", cents: int = 100) -> Event:
    oid = order_id("ORD-0-", ord(key))
    if op is Op.DELETE:
        return Event(seq, op, oid)
    return Event(seq, op, oid, "CUST-0000001", 0, status, cents, "PROD-0001", 1)


def test_the_four_rules() -> None:
    """insert+update -> insert of the final image; insert+delete -> nothing;
    update+update -> update; update+delete -> delete."""
    events = [
        ev(1, Op.INSERT, "a"),
        ev(2, Op.UPDATE, "a", "PROCESSING", 200),
        ev(3, Op.INSERT, "b"),
        ev(4, Op.DELETE, "b"),
        ev(5, Op.UPDATE, "c", "SHIPPED"),
        ev(6, Op.UPDATE, "c", "DELIVERED", 300),
        ev(7, Op.UPDATE, "d"),
        ev(8, Op.DELETE, "d"),
    ]
    b = net_effect(0, Changes.from_events(events), [0, 0, 1, 1, 2, 2, 3, 3])
    a, c, d = (order_id("ORD-0-", ord(k)) for k in "acd")
    assert [(e.order_id, e.status, e.amount_cents) for e in b.inserts] == [(a, "PROCESSING", 200)]
    assert [(e.order_id, e.status, e.amount_cents) for e in b.updates] == [(c, "DELIVERED", 300)]
    assert list(b.deletes) == [d]
    assert b.checkpoints == {0: 2, 1: 4, 2: 6, 3: 8}
    assert b.counts == {Op.INSERT: 2, Op.UPDATE: 4, Op.DELETE: 2}


def apply(state: dict[str, tuple[object, ...]], changes: Changes) -> None:
    """Apply a batch's net effect the way a sink must: inserts new, updates and deletes existing."""
    b = net_effect(0, changes, partitions_of(changes.order_no, 64))
    for e in b.inserts:
        assert e.order_id not in state
        state[e.order_id] = tuple(e.row())
    for e in b.updates:
        assert e.order_id in state
        state[e.order_id] = tuple(e.row())
    for oid in b.deletes:
        del state[oid]


@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=12))
def test_batches_cut_anywhere_equal_one_by_one(cuts: list[int]) -> None:
    """However the stream is cut into batches, applying net effects equals the replay."""
    n = 8000
    events = OrderStream(identity()).take_changes(n)
    state: dict[str, tuple[object, ...]] = {}
    i = 0
    for c in cuts:
        apply(state, events.take(slice(i, i + c)))
        i += c
        if i >= n:
            break
    apply(state, events.take(slice(i, n))) if i < n else None
    assert state == replay(identity(), n)
