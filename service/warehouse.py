"""The warehouse layers (orders_derived, orders_aggregated) and their refresh.

Being built (issue 4); until then the runner's hooks do nothing.
"""

from __future__ import annotations

from typing import Any


def prepare(sink: Any) -> None:
    """Create the warehouse layers on the target (idempotent)."""


async def schedule(sink: Any, interval: float, metrics: Any) -> None:
    """Refresh the layers every ``interval`` seconds where the target has no task of its own."""
