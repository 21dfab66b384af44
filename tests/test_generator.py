"""The stream: deterministic, a prefix of any longer run, and a valid lifecycle."""

from __future__ import annotations

import collections

from service.pipeline.events import TRANSITIONS, Op, Status
from service.pipeline.generator import OrderStream, replay

from .conftest import identity


def test_same_identity_same_stream_in_any_chunking() -> None:
    """take(a)+take(b) equals take(a+b), and two streams of one identity are identical."""
    a = OrderStream(identity())
    whole = a.take(30_000)
    b = OrderStream(identity())
    parts = b.take(1) + b.take(4_999) + b.take(12_345) + b.take(12_655)
    assert parts == whole


def test_seed_and_shard_change_the_stream() -> None:
    """Another seed gives other events; another shard gives other order ids."""
    base = OrderStream(identity()).take(1000)
    assert OrderStream(identity(seed=8)).take(1000) != base
    sharded = OrderStream(identity(shard="3")).take(10)
    assert all(e.order_id.startswith("ORD-3-") for e in sharded)


def test_lifecycle_is_valid_and_no_event_touches_a_missing_order() -> None:
    """Every update follows the lifecycle; nothing touches an order not (or no longer) there."""
    live: dict[str, str] = {}
    seen: set[str] = set()
    ops: collections.Counter[Op] = collections.Counter()
    for ev in OrderStream(identity()).take(200_000):
        ops[ev.op] += 1
        if ev.op is Op.INSERT:
            assert ev.order_id not in seen, "order ids are unique forever"
            assert ev.status == Status.PENDING
            seen.add(ev.order_id)
            live[ev.order_id] = ev.status
        elif ev.op is Op.UPDATE:
            before = live[ev.order_id]  # KeyError: an update of a missing order
            assert ev.status == before or ev.status in TRANSITIONS[before], (before, ev.status)
            if ev.status == before:
                assert before == Status.PENDING  # only a quantity change keeps the status
            live[ev.order_id] = ev.status
        else:
            del live[ev.order_id]
        if ev.op is not Op.DELETE:
            assert ev.amount_cents is not None and ev.amount_cents > 0
            assert ev.quantity is not None and 1 <= ev.quantity <= 6
    total = sum(ops.values())
    assert 0.57 < ops[Op.INSERT] / total < 0.65
    assert 0.31 < ops[Op.UPDATE] / total < 0.38
    assert 0.03 < ops[Op.DELETE] / total < 0.07


def test_amount_is_unit_price_times_quantity() -> None:
    """Within one product, amount / quantity is one fixed unit price."""
    prices: dict[str, set[int]] = collections.defaultdict(set)
    for ev in OrderStream(identity()).take(50_000):
        if ev.op is not Op.DELETE:
            assert ev.amount_cents is not None and ev.quantity and ev.product_id is not None
            assert ev.amount_cents % ev.quantity == 0
            prices[ev.product_id].add(ev.amount_cents // ev.quantity)
    assert all(len(p) == 1 for p in prices.values())


def test_customers_repeat_and_months_spread() -> None:
    """Repeat buyers (skewed customers) and orders over several months."""
    state = replay(identity(), 100_000)
    customers = collections.Counter(r[1] for r in state.values())
    top = customers.most_common(1)[0][1]
    assert top > 50 * (len(state) / len(customers))
    import datetime as dt

    months = {dt.datetime.fromtimestamp(r[2], dt.UTC).strftime("%Y-%m") for r in state.values()}
    assert len(months) >= 3
