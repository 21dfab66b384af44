"""The Snowflake builders and the error classes, without a database."""

from __future__ import annotations

import datetime as dt
import random
import re
from decimal import Decimal

import numpy as np
import pytest
import sqlglot
from snowflake.connector import errors as sf
from snowflake.connector.converter import SnowflakeConverter

from service.pipeline.events import Batch, Event, Op
from service.pipeline.generator import OrderStream
from service.pipeline.net_effect import net_effect
from service.sinks.base import Claim, SinkError
from service.sinks.snowflake import errors
from service.sinks.snowflake import sql as q

from .conftest import identity

NOW = dt.datetime(2026, 1, 2, 3, 4, 5)
CLAIM = Claim("0", 7, {}, None)


def _batch(n: int, seed: int = 7) -> Batch:
    changes = OrderStream(identity(seed)).take_changes(n)
    return net_effect(0, changes, changes.seq % 64)


def _rendered(sql: str, params: list[object]) -> str:
    """What the connector sends: pyformat values rendered client-side."""
    c = SnowflakeConverter()
    return sql % tuple(c.quote(c.escape(c.to_snowflake(v))) for v in params)


def test_row_is_utc_naive_datetime_and_exact_decimal() -> None:
    """Cents and epoch seconds become an exact Decimal and a naive UTC datetime."""
    ev = Event(1, Op.INSERT, "ORD-0-1", "CUST-1", 1_767_225_600, "PENDING", 1999, "PROD-1", 2)
    assert q.row(ev) == (
        "ORD-0-1",
        "CUST-1",
        dt.datetime(2026, 1, 1),
        "PENDING",
        Decimal("19.99"),
        "PROD-1",
        2,
    )


@pytest.mark.parametrize("max_rows", [1, 7, 100, q.MAX_LIST])
def test_chunks_keep_order_and_limits(max_rows: int) -> None:
    """Chunks cover every item once, in order, within the row and text limits."""
    items = [f"x{i}" * (i % 5 + 1) for i in range(1000)]
    parts = list(q.chunks(items, len, max_rows, max_text=300))
    assert [x for p in parts for x in p] == items
    assert all(len(p) <= max_rows for p in parts)
    assert all(sum(map(len, p)) <= 300 or len(p) == 1 for p in parts)


@pytest.mark.parametrize("max_rows", [1, 3, 50, q.MAX_LIST])
@pytest.mark.parametrize("max_text", [40, 333, 10_000])
def test_chunk_bounds_are_greedy_within_the_limits(max_rows: int, max_text: int) -> None:
    """The one chunking (plan's statements and round_trips' count): every item once, in order,
    each run within the limits and as long as they allow."""
    rng = random.Random(max_rows * max_text)
    sizes = [rng.randint(1, 60) for _ in range(2_000)]
    bounds = q.chunk_bounds(np.array(sizes), max_rows, max_text)
    assert [i for a, b in bounds for i in range(a, b)] == list(range(len(sizes)))
    for a, b in bounds:
        assert b - a <= max_rows and (sum(sizes[a:b]) <= max_text or b - a == 1)
        if b < len(sizes):  # the next item would break a limit
            assert b - a == max_rows or sum(sizes[a : b + 1]) > max_text


def test_row_sizes_from_columns_equal_the_row_estimate() -> None:
    """``row_sizes`` (columns) is ``_row_text`` (one row at a time), row by row, ids of any width."""
    for shard in ("0", "LONGSHARD_12345"):
        changes = OrderStream(identity(7, shard=shard)).take_changes(5_000)
        changes = changes.take(changes.op != Op.DELETE)  # rows with an image
        changes.order_no = changes.order_no * 10**9  # order numbers wider than their 10 digits
        events = changes.events()
        assert q.row_sizes(changes).tolist() == [q._row_text(ev) for ev in events]


def test_row_text_estimate_bounds_the_rendered_row() -> None:
    """The size estimate is never below what the connector renders, so chunks stay under 1 MB."""
    events = [
        ev
        for ev in OrderStream(identity(7, shard="LONGSHARD_12345")).take(3000)
        if ev.op is not Op.DELETE
    ]
    c = SnowflakeConverter()
    for ev in events:
        rendered = "(" + ", ".join(c.quote(c.escape(c.to_snowflake(v))) for v in q.row(ev)) + "),"
        assert q._row_text(ev) >= len(rendered), ev


def test_largest_insert_stays_under_the_limits() -> None:
    """16,384 rows of the longest shard's ids: split so each statement is < 1 MB and <= 16,384 rows."""
    ev = Event(
        1,
        Op.INSERT,
        "ORD-ABCDEFGHIJKLMNOP-0000000001",
        "CUST-0000001",
        1_767_225_600,
        "PROCESSING",
        123456,
        "PROD-0001",
        6,
    )
    stmts = q.inserts([ev] * 20_000)
    assert len(stmts) >= 2
    for st in stmts:
        assert len(st.params) <= q.MAX_LIST
        values = ",".join([re.search(r"VALUES (\(.*\))", st.sql).group(1)] * len(st.params))  # type: ignore[union-attr]
        text = st.sql.replace(re.search(r"VALUES (\(.*\))", st.sql).group(1), values)  # type: ignore[union-attr]
        assert len(_rendered(text, [v for row in st.params for v in row])) < 1_000_000


def test_plan_is_bulk_and_parses_as_snowflake() -> None:
    """One statement per chunk per kind, the checkpoint last; every statement parses."""
    batch = _batch(4000)
    plan = q.plan(batch, CLAIM, NOW, max_rows=500)
    verbs = [st.verb for st in plan]
    n_ins = -(-len(batch.inserts) // 500)
    n_merge = -(-(len(batch.updates) + len(batch.deletes)) // 500)
    assert verbs == ["INSERT"] * n_ins + ["MERGE"] * n_merge + ["UPDATE"]
    assert q.round_trips(batch, 500) == len(plan) + 1
    # The lock model's view of the same plan: its verbs and the tables they lock, in order.
    trips = q.trips(batch, 500)
    assert [verb for verb, _ in trips] == [*verbs, "COMMIT"]
    tables = [t for st, (_, t) in zip(plan, trips, strict=False) if st.verb in ("UPDATE", "MERGE")]
    assert tables == ["raw_orders"] * n_merge + ["cdc_checkpoints"]
    assert all(st.sql.split()[2 if st.verb == "MERGE" else 1] == t for st, (_, t) in
               zip(plan, trips, strict=False) if t)  # fmt: skip
    assert q.locked_trips(trips) == n_merge + 2  # from the first MERGE to the COMMIT
    for st in plan:
        if st.many:
            assert st.sql.count("%s") == len(st.params[0])
            sql = _rendered(st.sql, list(st.params[0]))
        else:
            assert st.sql.count("%s") == len(st.params)
            sql = _rendered(st.sql, list(st.params))
        assert sqlglot.parse_one(sql, read="snowflake") is not None


def test_values_are_bound_never_formatted() -> None:
    """A hostile value travels as a parameter: the SQL text holds only placeholders."""
    ev = Event(1, Op.UPDATE, "ORD-0-1'); DROP TABLE raw_orders; --", "C", 0, "S", 1, "P", 1)
    for st in [*q.merges([ev], [ev.order_id]), *q.inserts([ev])]:
        assert "DROP TABLE" not in st.sql
    st = q.checkpoint(CLAIM, {3: 10, 1: 5}, NOW)
    assert st.params == [NOW, 1, 5, 3, 10, "0", 7, "0", 7]
    assert "10" not in st.sql and "7" not in st.sql


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (
            sf.DatabaseError(
                msg="Incorrect username or password was specified.", errno=390100, sqlstate="08004"
            ),
            errors.Kind.TERMINAL,
        ),
        (
            sf.DatabaseError(msg="JWT token is invalid.", errno=390144, sqlstate="08004"),
            errors.Kind.TERMINAL,
        ),
        (
            sf.ProgrammingError(
                msg="Object 'RAW_ORDERS' does not exist or not authorized.",
                errno=2003,
                sqlstate="42S02",
            ),
            errors.Kind.TERMINAL,
        ),
        (
            sf.ProgrammingError(
                msg="SQL compilation error: syntax error", errno=1003, sqlstate="42000"
            ),
            errors.Kind.TERMINAL,
        ),
        (
            sf.ProgrammingError(
                msg="Insufficient privileges to operate on table", errno=3001, sqlstate="42501"
            ),
            errors.Kind.TERMINAL,
        ),
        (
            sf.OperationalError(
                msg="Could not connect to Snowflake backend", errno=250001, sqlstate="08001"
            ),
            errors.Kind.TRANSIENT,
        ),
        (
            sf.OperationalError(msg="Connection is closed", errno=250002, sqlstate="08003"),
            errors.Kind.TRANSIENT,
        ),
        (
            sf.ProgrammingError(
                msg="Authentication token has expired.", errno=390114, sqlstate="08001"
            ),
            errors.Kind.TRANSIENT,
        ),
        (sf.InternalServerError(), errors.Kind.TRANSIENT),
        (sf.ServiceUnavailableError(), errors.Kind.TRANSIENT),
        (sf.TooManyRequests(), errors.Kind.TRANSIENT),
        (sf.ForbiddenError(), errors.Kind.TERMINAL),
        (
            sf.HttpError(
                msg="401 Unauthorized: post /queries/v1/query-request",
                errno=290401,
                sqlstate="08001",
            ),
            errors.Kind.TRANSIENT,
        ),
        (sf.HttpError(msg="404 Not Found", errno=290404, sqlstate="08001"), errors.Kind.TERMINAL),
        (
            sf.OperationalError(msg="Warehouse 'COMPUTE_WH' is resuming; try again", errno=999),
            errors.Kind.TRANSIENT,
        ),
        (
            sf.ProgrammingError(
                msg="Statement reached its statement or warehouse timeout",
                errno=630,
                sqlstate="57014",
            ),
            errors.Kind.TRANSIENT,
        ),
        (
            # The emulator: the session still runs the statement whose reply timed out.
            sf.ProgrammingError(
                msg="Resource In Use Error: connection is busy with another call",
                errno=2002,
                sqlstate="42710",
            ),
            errors.Kind.TRANSIENT,
        ),
        (
            sf.ProgrammingError(msg="syntax error", errno=1003, sqlstate="42000"),
            errors.Kind.TERMINAL,
        ),
        (ConnectionResetError(104, "reset"), errors.Kind.TRANSIENT),
        (TimeoutError(), errors.Kind.TRANSIENT),
        (ValueError("a bug"), errors.Kind.TERMINAL),
        (SinkError("stop"), errors.Kind.TERMINAL),
    ],
)
def test_errors_are_classified_in_one_place(exc: BaseException, kind: errors.Kind) -> None:
    """Network, HTTP 5xx/429, expired sessions, resuming warehouses: transient; the rest terminal."""
    assert errors.classify(exc) is kind


def test_described_error_is_one_line_without_the_statement() -> None:
    """A failed 1 MB INSERT is reported by its code and first line, not its SQL."""
    exc = sf.ProgrammingError(
        msg="SQL compilation error:\nsyntax error line 1",
        errno=1003,
        sqlstate="42000",
        query="INSERT INTO raw_orders VALUES " + "(1)," * 10_000,
    )
    text = errors.describe(exc)
    assert "\n" not in text and len(text) <= 300
    assert text.startswith("ProgrammingError 001003 (42000): SQL compilation error")
    sink_error = errors.terminal(exc, "batch failed")
    assert "VALUES" not in str(sink_error)
