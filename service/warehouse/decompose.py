"""What the layers' SELECTs decompose into, so that a refresh can follow what changed.

Pure: sqlglot over the SELECTs of ``sql/`` (:func:`service.warehouse.sqlfiles.layers`), no
database. :func:`plan` returns None for a shape it cannot keep by deltas (a
MIN or MAX, a join, a HAVING, a window, a float summed, an item that depends on
when it is read, ...): that layer pair is then rebuilt in full on every refresh.

- The derived layer (``orders_derived_rows``) must be row-wise over ``raw_orders``
  and select its primary key as is. (What depends on when it is read,
  ``days_since_order``, is in the view ``orders_derived`` over it, in ``sql/``.)
- ``orders_aggregated`` must be aggregates over the derived layer grouped by
  columns. Each aggregate becomes partial columns at a finer grain (the group
  keys plus the one column counted DISTINCT: per month and customer):
  SUM(x) -> SUM(x) and COUNT(x) (SQL's SUM is NULL where nothing was added),
  COUNT(x) -> COUNT(x), AVG(x) -> SUM(x) / COUNT(x), COUNT(DISTINCT key) ->
  COUNT(key) (the primary key is unique), COUNT(DISTINCT c) -> c in the grain.
  Partials add up across rows and subtract, so a change is its new image's
  partials minus its old image's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlglot import exp

from ..config import Names
from . import sqlfiles

PARTIAL_SUFFIX = "_partial"
GROUPS_SUFFIX = "_groups"
ROW_COUNT = "cdc_rows"  # rows behind a partial row: at 0 the row goes
DISTINCT = "cdc_distinct"  # per group: grain rows with a non-NULL distinct column
#: Functions whose value depends on when they run.
_NOW = (
    exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime,
    exp.CurrentTimestampLTZ, exp.Localtime, exp.Localtimestamp, exp.Systimestamp,
)  # fmt: skip
_NOW_NAMES = frozenset({"SYSDATE", "GETDATE", "NOW", "SYSTIMESTAMP", "LOCALTIMESTAMP"})

Final = Callable[[list[exp.Expression]], exp.Expression]


@dataclass(frozen=True, slots=True)
class Plan:
    """How both layers are kept by deltas."""

    raw: str
    key: str  # raw_orders' primary key, selected as is by the derived layer
    derived: str  # the derived layer, a table of its SELECT's rows
    aggregated: str
    base_select: exp.Select  # the derived layer's SELECT
    keys: list[str]  # the aggregate's GROUP BY columns
    distinct: str | None  # the column counted DISTINCT, part of the grain
    partial_exprs: list[exp.Expression]  # over derived rows, named p0, p1, ...
    final_select: exp.Select  # over the groups table (one row per group); cast by the caller
    where: exp.Expression | None  # the aggregate's WHERE, over derived rows
    aggregated_select: exp.Select  # the file's own SELECT (what a full rebuild runs)
    sums: list[exp.Expression]  # arguments of SUM and AVG: must be exact numbers

    @property
    def base(self) -> str:
        """The stored derived rows (the dynamic table's name: a table locally)."""
        return self.derived

    @property
    def partial(self) -> str:
        return self.aggregated + PARTIAL_SUFFIX

    @property
    def groups(self) -> str:
        return self.aggregated + GROUPS_SUFFIX

    @property
    def grain(self) -> list[str]:
        return self.keys + ([self.distinct] if self.distinct else [])

    @property
    def values(self) -> list[str]:
        """The partial table's additive columns."""
        return [ROW_COUNT, *(f"p{i}" for i in range(len(self.partial_exprs)))]

    @property
    def group_values(self) -> list[str]:
        """The groups table's additive columns."""
        return self.values + ([DISTINCT] if self.distinct else [])

    def digest(self) -> str:
        """Changes when any definition changes (then the stored layers are rebuilt)."""
        parts = (self.base_select, self.aggregated_select, self.final_select)
        return hashlib.sha256("\n".join(s.sql("duckdb") for s in parts).encode()).hexdigest()[:16]

    def partial_select(self, source: str) -> exp.Select:
        """The partials of the derived rows in ``source``, by grain."""
        values = [exp.alias_(exp.Count(this=exp.Star()), ROW_COUNT)]
        values += [exp.alias_(e.copy(), f"p{i}") for i, e in enumerate(self.partial_exprs)]
        sel = exp.select(*[exp.column(g) for g in self.grain], *values).from_(source)
        if self.where is not None:
            sel = sel.where(self.where.copy())
        return sel.group_by(*[exp.column(g) for g in self.grain]) if self.grain else sel

    def groups_select(self) -> exp.Select:
        """The groups table from the partial table."""
        values = [exp.alias_(exp.Sum(this=exp.column(v)), v) for v in self.values]
        if self.distinct:
            values.append(exp.alias_(exp.Count(this=exp.column(self.distinct)), DISTINCT))
        sel = exp.select(*[exp.column(k) for k in self.keys], *values).from_(self.partial)
        return sel.group_by(*[exp.column(k) for k in self.keys]) if self.keys else sel


def now_dependent(e: exp.Expression) -> bool:
    """Whether the expression's value depends on when it is evaluated."""
    return any(
        isinstance(n, _NOW) or (isinstance(n, exp.Anonymous) and n.name.upper() in _NOW_NAMES)
        for n in e.walk()
    )


def _single_source(select: exp.Query) -> str | None:
    """The one table a plain SELECT reads (no joins, set operations or subqueries)."""
    if not isinstance(select, exp.Select) or select.args.get("joins") or select.args.get("with"):
        return None
    if any(select.args.get(k) for k in ("distinct", "limit", "order", "qualify", "offset")):
        return None
    source = select.args.get("from_")
    if source is None or not isinstance(source.this, exp.Table):
        return None
    if any(isinstance(n, exp.Subquery | exp.Window) for n in select.walk()):
        return None
    return str(source.this.name)


def _passes_through(item: exp.Expression) -> str | None:
    """The column's name where the item is a column selected under its own name."""
    inner = item.this if isinstance(item, exp.Alias) else item
    if isinstance(inner, exp.Column) and inner.name == item.alias_or_name:
        return str(inner.name)
    return None


def primary_key(table: str) -> list[str]:
    """The declared primary key of a table of sql/ (informational on every target)."""
    for _, text in sqlfiles.files():
        with sqlfiles.quiet_sqlglot():
            parsed = sqlfiles.parse(sqlfiles.render(text, Names()))
        for e in parsed:
            schema = e.this if isinstance(e, exp.Create) else None
            if isinstance(schema, exp.Schema) and schema.this.name == table:
                for pk in schema.find_all(exp.PrimaryKey):
                    return [c.name for c in pk.expressions]
    return []


# -- the aggregates ---------------------------------------------------------------------------


def _sum(cols: list[exp.Expression]) -> exp.Expression:
    return exp.Sum(this=cols[0])


def _some(count: exp.Expression) -> exp.Expression:
    return exp.GT(this=exp.Sum(this=count), expression=exp.Literal.number(0))


def _sum_or_null(cols: list[exp.Expression]) -> exp.Expression:
    """SQL's SUM: NULL where no value was there to add."""
    return exp.Case(ifs=[exp.If(this=_some(cols[1]), true=exp.Sum(this=cols[0]))])


def _average(cols: list[exp.Expression]) -> exp.Expression:
    total = exp.cast(exp.Sum(this=cols[0]), exp.DataType.build("DOUBLE"))
    ratio = exp.Div(this=total, expression=exp.Sum(this=cols[1]))
    return exp.Case(ifs=[exp.If(this=_some(cols[1]), true=ratio)])


def _count_distinct(_: list[exp.Expression]) -> exp.Expression:
    return exp.Sum(this=exp.column(DISTINCT))


def _decompose(agg: exp.AggFunc, key: str) -> tuple[list[exp.Expression], Final, str] | None:
    """An aggregate's partial columns, its final form over them, and the column it adds to
    the grain ('' for none); None where it does not decompose."""
    arg = agg.this
    if isinstance(agg, exp.Count):
        if not isinstance(arg, exp.Distinct):
            counted = exp.Star() if isinstance(arg, exp.Star) else arg.copy()
            return [exp.Count(this=counted)], _sum, ""
        if len(arg.expressions) != 1 or not isinstance(arg.expressions[0], exp.Column):
            return None
        name = str(arg.expressions[0].name)
        if name == key:  # unique: as many distinct values as non-NULL ones
            return [exp.Count(this=exp.column(key))], _sum, ""
        return [], _count_distinct, name
    if isinstance(agg, exp.Sum | exp.Avg) and not agg.args.get("expressions"):
        total = exp.Coalesce(this=exp.Sum(this=arg.copy()), expressions=[exp.Literal.number(0)])
        final = _average if isinstance(agg, exp.Avg) else _sum_or_null
        return [total, exp.Count(this=arg.copy())], final, ""
    return None


def _derived(select: exp.Query, raw: str) -> str | None:
    """The key of a row-wise SELECT over ``raw`` that selects it as is, else None."""
    if not isinstance(select, exp.Select) or select.args.get("group") or select.args.get("having"):
        return None
    if any(isinstance(n, exp.AggFunc) for n in select.walk()):
        return None
    key = primary_key(raw)
    items = select.expressions
    names = [i.alias_or_name for i in items]
    through = {n for n in (_passes_through(i) for i in items) if n}
    if len(key) != 1 or key[0] not in through or len(set(names)) != len(names) or "" in names:
        return None
    if any(now_dependent(i) for i in items):  # a stored row would go stale
        return None
    return key[0]


def plan(layers: Sequence[sqlfiles.Layer]) -> Plan | None:
    """The delta plan for the layers (derived over raw_orders, aggregated over derived), or
    None where their shape does not decompose."""
    if len(layers) != 2:
        return None
    derived, aggregated = layers
    raw = _single_source(derived.select)
    key = _derived(derived.select, raw) if raw else None
    a_sel = aggregated.select
    if raw is None or key is None or _single_source(a_sel) != derived.name:
        return None
    assert isinstance(a_sel, exp.Select) and isinstance(derived.select, exp.Select)
    group = a_sel.args.get("group")
    if a_sel.args.get("having") or (
        group and not all(isinstance(g, exp.Column) for g in group.expressions)
    ):
        return None
    keys = [str(g.name) for g in group.expressions] if group else []
    partials: list[exp.Expression] = []
    distinct: set[str] = set()
    sums: list[exp.Expression] = []
    items = []
    for item in a_sel.expressions:
        item = item.copy()
        if any(
            c.name not in keys
            for c in item.find_all(exp.Column)
            if not c.find_ancestor(exp.AggFunc)
        ):
            return None
        for agg in list(item.find_all(exp.AggFunc)):
            parts = _decompose(agg, key)
            if parts is None or agg.find_ancestor(exp.AggFunc) is not None:
                return None
            exprs, final, grain = parts
            if isinstance(agg, exp.Sum | exp.Avg):
                sums.append(agg.this.copy())
            cols: list[exp.Expression] = []
            for e in exprs:  # one partial column per distinct expression
                known = [p.sql("duckdb") for p in partials]
                if e.sql("duckdb") not in known:
                    partials.append(e)
                    known.append(e.sql("duckdb"))
                cols.append(exp.column(f"p{known.index(e.sql('duckdb'))}"))
            distinct |= {grain} - {""}
            agg.replace(final(cols))
        items.append(item)
    if len(distinct) > 1 or distinct & set(keys):
        return None
    aggregated_name = aggregated.name
    final_select = exp.select(*items).from_(aggregated_name + GROUPS_SUFFIX)
    if keys:
        final_select = final_select.group_by(*[exp.column(k) for k in keys])
    return Plan(
        raw, key, derived.name, aggregated_name, derived.select.copy(), keys,
        next(iter(distinct), None), partials, final_select, a_sel.args.get("where"),
        a_sel.copy(), sums,
    )  # fmt: skip
