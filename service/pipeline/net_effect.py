"""The net effect of a batch: every order's changes collapsed into one, in one pass of numpy.

insert+update -> insert of the final image; insert+...+delete -> nothing;
update+update -> update of the final image; update+delete -> delete. The batch
also carries, per partition, the last sequence number it holds: its checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .events import Batch, Changes, Op

_INSERT, _DELETE = Op.INSERT, Op.DELETE


def net_effect(worker: int, changes: Changes, partitions: Sequence[int] | np.ndarray) -> Batch:
    """Collapse the changes to each order into one.

    insert+update -> insert of the final image; insert+...+delete -> nothing;
    update+update -> update of the final image; update+delete -> delete.
    ``changes`` are in sequence order; ``partitions`` runs beside them.
    """
    parts = np.asarray(partitions, np.int64)
    n = len(changes)
    # Group each order's changes together, keeping their sequence order.
    order = np.argsort(changes.order_no, kind="stable")
    keys = changes.order_no[order]
    starts = np.ones(n, bool)
    starts[1:] = keys[1:] != keys[:-1]
    ends = np.ones(n, bool)
    ends[:-1] = starts[1:]
    first, last = order[starts], order[ends]
    # Order ids are never reused and an order's insert is its first change, so
    # "existed before this batch" is "its first change here is not an insert".
    created = changes.op[first] == _INSERT
    final_op = changes.op[last]
    keep = ~(created & (final_op == _DELETE))
    rows = changes.take(last[keep])
    # A created order is inserted with its final image; an existing one keeps its final op.
    rows.op = np.where(created[keep], np.int8(_INSERT), rows.op).astype(np.int8)
    # Sequence numbers only grow along the run: the last one seen per partition wins.
    rev_parts = parts[::-1]
    uniq, idx = np.unique(rev_parts, return_index=True)
    checkpoints = dict(zip(uniq.tolist(), changes.seq[n - 1 - idx].tolist(), strict=True))
    return Batch(worker, rows, checkpoints, changes.counts(), changes, parts)
