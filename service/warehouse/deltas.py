"""The local layers kept by deltas on DuckDB: a refresh costs what changed, not the table's size.

The writer records, in each batch's own transaction, the order ids the batch
touched (``cdc_changed_orders``, sql/031). A refresh, in one transaction:

1. takes the logged ids its snapshot sees (later batches stay logged);
2. the stored rows of the derived layer (``orders_derived_rows``; the view
   ``orders_derived`` of ``sql/`` adds what depends on when it is read) of those
   orders are replaced by the file's SELECT over just those orders of raw_orders,
   an ``order_id BETWEEN`` range first so that DuckDB's zone maps skip the old row
   groups (as the writer's DELETE does);
3. the partials (:mod:`service.warehouse.decompose`; per month and customer) move by the
   new images' partials minus the old images'; a grain row whose row count
   reaches 0 goes;
4. the groups table (a row per month: the partials summed, and the customers
   alive in it) moves by the same deltas, the customers by those that came or went;
5. ``orders_aggregated`` is recomputed from the groups table, a row per month
   (which also undoes any edit made to it by hand).

Every step is bounded by what changed, but for the probe of the partial table
(customers x months, whatever the rows). A full rebuild (every layer from
raw_orders, ``orders_aggregated`` by the file's own SELECT) runs instead where
the log does not cover what changed: a file from before (no state), after
``--reset`` (the stream's record changed), a changed definition, more than a
quarter of the rows or more than ``REBUILD_CHANGES`` changed (then it is cheaper, and a
rebuild streams where deltas hold the changed ids in memory), or rows that no longer add
up (a DELETE or INSERT made by hand; a hand UPDATE is not seen: ``DELETE FROM
cdc_layer_state`` forces a rebuild).

The SQL is built with sqlglot from names that come from ``sql/`` (validated
identifiers), never from input.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlglot import exp

from .. import clock
from ..config import Names
from ..sinks.base import SqlSession
from . import sqlfiles
from .decompose import DISTINCT, ROW_COUNT, Plan

#: The file of sql/ that creates CHANGES and STATE (also applied by every local ``init``).
FILE = "031"
CHANGES = "cdc_changed_orders"
STATE = "cdc_layer_state"
#: Above this share of the stored rows changed, a full rebuild is the cheaper refresh.
REBUILD_SHARE = 0.25
#: And above this many logged changes, whatever the table's size: the refresh by deltas
#: holds the changed ids (a DISTINCT, a semi-join) in memory, and with millions of them
#: (a catch-up, or the bench's 150,000 events/s between two refreshes) it ran out of
#: DuckDB's limit where a full rebuild, which streams, did not. A service at 200 events/s
#: logs 24,000 between two refreshes.
REBUILD_CHANGES = 250_000
_EXACT = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "DECIMAL", "UBIGINT", "UINTEGER")
BEFORE = "cdc_before"  # in cdc_merged: a row's row count before the merge


def _sql(e: exp.Expression) -> str:
    return e.sql("duckdb")


def _create(name: str, select: exp.Query, temp: bool = False, kind: str = "TABLE") -> str:
    props = exp.Properties(expressions=[exp.TemporaryProperty()]) if temp else None
    create = exp.Create(
        this=exp.to_table(name), kind=kind, replace=True, expression=select, properties=props
    )
    return _sql(create)


def _drop(name: str, kind: str = "TABLE") -> str:
    return _sql(exp.Drop(tables=[exp.to_table(name)], kind=kind, exists=True))


def _count(session: SqlSession, table: str) -> int:
    row = session.execute(_sql(exp.select("COUNT(*)").from_(table))).fetchone()
    return int(row[0]) if row else 0


def _kind(session: SqlSession, name: str) -> str | None:
    """'BASE TABLE', 'VIEW' or None: what ``name`` is in the catalog."""
    row = session.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ? "
        "AND table_schema = current_schema()",
        [name],
    ).fetchone()
    return None if row is None else str(row[0])


def drop(session: SqlSession, name: str) -> None:
    """Drop the table or view of that name, whichever it is."""
    kind = _kind(session, name)
    if kind is not None:
        session.execute(_drop(name, "VIEW" if kind == "VIEW" else "TABLE"))


def ensure_tables(session: SqlSession) -> None:
    """The change log and the state (IF NOT EXISTS: for a session that skipped init)."""
    for stmt in sqlfiles.statements(FILE, Names(), "duckdb"):
        session.execute(stmt)


def forget(session: SqlSession) -> None:
    """After a rebuild that deltas did not make: no state, no changes pending."""
    ensure_tables(session)
    session.execute(_sql(exp.delete(STATE)))
    session.execute(_sql(exp.delete(CHANGES)))


def _streams(session: SqlSession) -> str:
    """Each shard's stream record: a --reset drops and re-creates it (and the rows, unlogged)."""
    if _kind(session, "cdc_streams") is None:
        return ""
    rows = session.execute("SELECT shard, created_at FROM cdc_streams ORDER BY shard").fetchall()
    return ";".join(f"{s}@{t}" for s, t in rows)


def _types(session: SqlSession, select: exp.Query) -> list[str]:
    return [str(r[1]) for r in session.execute(_sql(exp.Describe(this=select))).fetchall()]


def _exact(session: SqlSession, p: Plan) -> bool:
    """Whether every SUM and AVG adds exact numbers (floats would drift under subtraction)."""
    if not p.sums:
        return True
    types = _types(session, exp.select(*[s.copy() for s in p.sums]).from_(p.base).limit(0))
    return all(t.upper().startswith(_EXACT) for t in types)


def covered(session: SqlSession, p: Plan) -> bool:
    """Whether the stored layers plus the logged changes are the whole story."""
    tables = (p.base, p.partial, p.groups, p.aggregated)
    if any(_kind(session, t) != "BASE TABLE" for t in tables):
        return False
    state = session.execute(_sql(exp.select("definition", "streams").from_(STATE))).fetchall()
    if [tuple(r) for r in state] != [(p.digest(), _streams(session))]:
        return False
    changes, stored = _count(session, CHANGES), _count(session, p.base)
    limit = min(REBUILD_CHANGES, max(1_000, REBUILD_SHARE * stored))
    return changes <= limit and _exact(session, p)


def _record(session: SqlSession, p: Plan) -> None:
    session.execute(_sql(exp.delete(CHANGES)))  # those this snapshot sees: later ones stay
    session.execute(_sql(exp.delete(STATE)))
    session.execute(
        _sql(
            exp.insert("VALUES (?, ?, ?)", STATE, columns=["definition", "streams", "refreshed_at"])
        ),
        [p.digest(), _streams(session), clock.utc_now()],
    )


def _final(session: SqlSession, p: Plan) -> exp.Select:
    """The final SELECT over the groups, each column cast to the type the file's SELECT has."""
    sel = p.final_select.copy()
    typed = [
        exp.alias_(exp.cast(i.unalias().copy(), exp.DataType.build(t, "duckdb")), i.alias_or_name)
        for i, t in zip(sel.expressions, _types(session, p.aggregated_select), strict=True)
    ]
    sel.set("expressions", typed)
    return sel


def rebuild(session: SqlSession, p: Plan) -> int:
    """Every layer from the whole of raw_orders (in the caller's transaction). Rows written."""
    session.execute(_create(p.base, p.base_select))
    session.execute(_create(p.partial, p.partial_select(p.base)))
    session.execute(_create(p.groups, p.groups_select()))
    # The final rows from the groups, as a refresh by deltas makes them: the file's SELECT
    # straight over the view would hold every distinct order id at once (COUNT(DISTINCT)
    # does not spill), and ran out of DuckDB's default 64 MB at 16 million rows.
    session.execute(_create(p.aggregated, _final(session, p)))
    _record(session, p)
    return _count(session, p.base) + _count(session, p.aggregated)


def _same(left: str, right: str, columns: Sequence[str]) -> exp.Expr:
    """NULL-safe equality of the columns (a NULL order_date makes a NULL month)."""
    pairs = [
        exp.NullSafeEQ(this=exp.column(c, left), expression=exp.column(c, right)) for c in columns
    ]
    return exp.and_(*pairs) if pairs else exp.true()


def _merge(session: SqlSession, table: str, keys: list[str], values: list[str], delta: str) -> None:
    """``table`` += ``delta`` by ``keys``; rows whose row count reaches 0 go. Leaves
    ``cdc_merged``: the keys, the new values, and the row count before (BEFORE)."""
    cols: list[exp.Expr] = [exp.column(k, "d").as_(k) for k in keys]
    cols += [
        exp.Add(
            this=exp.func("COALESCE", exp.column(v, "t"), 0), expression=exp.column(v, "d")
        ).as_(v)
        for v in values
    ]
    cols.append(exp.func("COALESCE", exp.column(ROW_COUNT, "t"), 0).as_(BEFORE))
    merged = (
        exp.select(*cols)
        .from_(exp.to_table(delta).as_("d"))
        .join(exp.to_table(table).as_("t"), on=_same("t", "d", keys), join_type="left")
    )
    session.execute(_create("cdc_merged", merged, temp=True))
    gone = exp.delete(table, where=_same(table, "d", keys))
    gone.set("using", [exp.to_table(delta).as_("d")])
    session.execute(_sql(gone))
    alive = exp.select(*keys, *values).from_("cdc_merged").where(exp.column(ROW_COUNT).neq(0))
    session.execute(_sql(exp.insert(alive, table)))


def _sums(keys: list[str], values: list[str], source: exp.Query) -> exp.Select:
    """SUM of each value by ``keys`` over ``source``."""
    sums = [exp.Sum(this=exp.column(v)).as_(v) for v in values]
    sel = exp.select(*keys, *sums).from_(source.subquery("s"))
    return sel.group_by(*keys) if keys else sel


def _partials(session: SqlSession, p: Plan) -> None:
    """The partial and groups tables move by the changed orders' new minus old images."""
    grain, values = p.grain, p.values
    new = exp.select(*grain, *values).from_(p.partial_select("cdc_new").subquery("n"))
    negated = [exp.Neg(this=exp.column(v)).as_(v) for v in values]
    old = exp.select(*grain, *negated).from_(p.partial_select("cdc_old").subquery("o"))
    session.execute(
        _create("cdc_delta", _sums(grain, values, exp.union(new, old, distinct=False)), temp=True)
    )
    _merge(session, p.partial, grain, values, "cdc_delta")
    parts: exp.Query = exp.select(*p.keys, *values).from_("cdc_delta")
    if p.distinct:
        # A customer appears in a month when its grain row comes to life, and goes with it.
        count, before = exp.column(ROW_COUNT), exp.column(BEFORE)
        came_or_went = exp.Case(
            ifs=[
                exp.If(this=exp.column(p.distinct).is_(exp.null()), true=exp.Literal.number(0)),
                exp.If(this=exp.and_(before.eq(0), count.neq(0)), true=exp.Literal.number(1)),
                exp.If(this=exp.and_(before.neq(0), count.eq(0)), true=exp.Literal.number(-1)),
            ],
            default=exp.Literal.number(0),
        )
        zeros = [exp.Literal.number(0).as_(v) for v in values]
        parts = exp.union(
            exp.select(*p.keys, *values, exp.Literal.number(0).as_(DISTINCT)).from_("cdc_delta"),
            exp.select(*p.keys, *zeros, came_or_went.as_(DISTINCT)).from_("cdc_merged"),
            distinct=False,
        )
    session.execute(_create("cdc_group_delta", _sums(p.keys, p.group_values, parts), temp=True))
    _merge(session, p.groups, p.keys, p.group_values, "cdc_group_delta")


def _changed_only(key: str) -> exp.Expr:
    """The key in the logged changes, within their bounds (two placeholders, for zone maps)."""
    within = exp.Between(this=exp.column(key), low=exp.Placeholder(), high=exp.Placeholder())
    logged = exp.column(key).isin(query=exp.select(key).from_("cdc_changed"))
    return exp.and_(within, logged)


def apply_changes(session: SqlSession, p: Plan) -> int | None:
    """Bring the layers up to date with the logged changes (in the caller's transaction).
    Rows written, or None when the rows no longer add up (the caller rebuilds)."""
    session.execute(_create("cdc_changed", exp.select(p.key).distinct().from_(CHANGES), temp=True))
    bounds = exp.select(exp.func("min", exp.column(p.key)), exp.func("max", exp.column(p.key)))
    lo, hi = session.execute(_sql(bounds.from_("cdc_changed"))).fetchone()
    written = 0
    if lo is not None:
        # The range first: DuckDB's zone maps then skip every row group outside it.
        only = _changed_only(p.key)
        session.execute(
            _create("cdc_old", exp.select("*").from_(p.base).where(only), temp=True), [lo, hi]
        )
        new = p.base_select.copy()
        changed = exp.select("*").from_(p.raw).where(only.copy())
        new.args["from_"].this.replace(changed.subquery(p.raw))
        session.execute(_create("cdc_new", new, temp=True), [lo, hi])
        session.execute(_sql(exp.delete(p.base, where=only.copy())), [lo, hi])
        session.execute(_sql(exp.insert(exp.select("*").from_("cdc_new"), p.base)))
        written += _count(session, "cdc_new")
        _partials(session, p)
    # Every row of raw_orders has its stored row (unless the SELECT filters: then no check).
    filtered = p.base_select.args.get("where") is not None
    if not filtered and _count(session, p.raw) != _count(session, p.base):
        return None
    session.execute(_create(p.aggregated, _final(session, p)))
    _record(session, p)
    for temp in ("cdc_changed", "cdc_old", "cdc_new", "cdc_delta", "cdc_merged", "cdc_group_delta"):
        session.execute(_drop(temp))
    return written + _count(session, p.aggregated)


def refresh(session: SqlSession, p: Plan) -> int:
    """One refresh, in the caller's transaction: by deltas where the log covers what changed,
    else a full rebuild. Rows written."""
    ensure_tables(session)
    if covered(session, p):
        written = apply_changes(session, p)
        if written is not None:
            return written
    return rebuild(session, p)
