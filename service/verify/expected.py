"""What ``raw_orders`` must hold for one shard, streamed: finished orders, in number order.

:func:`service.pipeline.generator.replay` builds the whole expected table in a dict; a
long stream's table does not fit. This replays the same events (the same
checkpoint rule: an event of partition p belongs iff its seq <= checkpoint[p])
column-wise, keeping only the orders that may still change: an order leaves
the generator's ring of in-flight orders when it is final, deleted or pushed
out, and is never touched again, so every order numbered below
:meth:`~service.pipeline.generator.OrderStream.settled_below` is done. Those are handed
out in chunks of consecutive order numbers, each with the number range it
covers, so a target can be compared with them range by range.

Memory: the in-flight window (the ring plus the orders inserted since its
oldest member, tens of thousands) and one chunk, whatever the stream's length.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import numpy as np

from ..pipeline.events import Op
from ..pipeline.generator import BLOCK, OrderStream, StreamIdentity
from ..pipeline.router import checkpoint_array, partitions_of

#: Rows per chunk (about; a chunk ends where the settled orders reach it).
CHUNK_ROWS = 20_000
#: Events drawn per step of the replay.
STEP = 65_536
#: The image columns of an order, as :class:`~service.pipeline.events.Changes` names them.
FIELDS = ("customer", "ts", "status", "cents", "product", "quantity")


@dataclass(frozen=True, slots=True)
class Chunk:
    """The rows the target must hold for order numbers in ``[low, high)``.

    ``high`` is None for the last chunk: it covers every number from ``low``
    up. ``order_no`` is ascending; the other columns are aligned with it
    (indexes into the catalog for customer and product, as in the stream).
    """

    low: int
    high: int | None
    order_no: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.order_no)


class _Window:
    """The images of orders numbered ``base`` up (present or not), as columns."""

    def __init__(self) -> None:
        self.base = 0
        self.present = np.zeros(0, bool)
        self.cols = {f: np.zeros(0, np.int64) for f in FIELDS}

    @property
    def top(self) -> int:
        """One past the highest order number the window holds."""
        return self.base + len(self.present)

    def apply(self, no: np.ndarray, op: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Apply events (in seq order): the last one of each order wins."""
        if not len(no):
            return
        orders, first_from_end = np.unique(no[::-1], return_index=True)
        last = len(no) - 1 - first_from_end
        if int(orders[0]) < self.base:
            raise AssertionError(f"order {int(orders[0])} changed after it settled")
        grow = int(orders[-1]) + 1 - self.top
        if grow > 0:
            self.present = np.concatenate([self.present, np.zeros(grow, bool)])
            for f in FIELDS:
                self.cols[f] = np.concatenate([self.cols[f], np.zeros(grow, np.int64)])
        at = orders - self.base
        self.present[at] = op[last] != Op.DELETE
        for f in FIELDS:
            self.cols[f][at] = values[f][last]

    def pop(self, below: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Remove the orders numbered below ``below``; return those present, in order."""
        k = max(0, min(below, self.top) - self.base)
        keep = self.present[:k]
        no = np.flatnonzero(keep) + self.base
        out = {f: self.cols[f][:k][keep] for f in FIELDS}
        self.present = self.present[k:].copy()
        self.cols = {f: c[k:].copy() for f, c in self.cols.items()}
        self.base += k
        return no, out


def chunks(
    identity: StreamIdentity, upto: int | Mapping[int, int], rows: int = CHUNK_ROWS
) -> Iterator[Chunk]:
    """The expected table after the stream's first ``upto`` events, or, given checkpoints,
    after each partition's events up to its checkpoint: chunks of about ``rows`` rows
    covering every order number from 0 up, in order."""
    if isinstance(upto, int):
        last, applied_to = upto, None
    else:
        last = max(upto.values(), default=0)
        applied_to = checkpoint_array(dict(upto), identity.partitions)
    stream = OrderStream(identity)
    window = _Window()
    pending: list[tuple[np.ndarray, dict[str, np.ndarray]]] = []
    held = 0
    low = 0
    step = min(STEP, max(BLOCK, rows))  # small chunks need small steps
    while stream.seq < last:
        changes = stream.take_changes(min(step, last - stream.seq))
        if applied_to is not None:
            parts = partitions_of(changes.order_no, identity.partitions)
            changes = changes.take(changes.seq <= applied_to[parts])
        window.apply(changes.order_no, changes.op, {f: getattr(changes, f) for f in FIELDS})
        if stream.seq >= last:
            break
        pending.append(window.pop(stream.settled_below()))
        held += len(pending[-1][0])
        if held >= rows:
            yield _chunk(low, window.base, pending)
            pending, held, low = [], 0, window.base
    pending.append(window.pop(window.top))
    yield _chunk(low, None, pending)


def _chunk(
    low: int, high: int | None, parts: list[tuple[np.ndarray, dict[str, np.ndarray]]]
) -> Chunk:
    no = np.concatenate([p[0] for p in parts])
    cols = {f: np.concatenate([p[1][f] for p in parts]) for f in FIELDS}
    return Chunk(low, high, no, cols)
