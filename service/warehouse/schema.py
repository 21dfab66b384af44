"""Is this target ours? The shapes of our tables, from ``sql/``, against what a target holds.

Before the service creates or changes anything, a table of one of our names
that exists with another shape (another program's ``raw_orders``, the seed's
table with ``amount NUMBER`` that drops the cents, a view where a table goes)
is refused: exit 2, one line, nothing changed. Columns are compared by name,
in order, and by kind (text, number with its scale, time); a table from an
earlier release may lack the columns that ``sql/`` adds later with
``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from sqlglot import exp

from ..config import Names
from ..sinks.base import SqlSession, TargetConfigError
from . import sqlfiles


@dataclass(frozen=True, slots=True)
class Shape:
    """A table of ours: its columns (name, kind) as created, then those added later."""

    name: str
    columns: tuple[tuple[str, str], ...]
    added: tuple[tuple[str, str], ...] = ()
    #: A warehouse layer: only the column names are ours to check (its types follow the SELECT).
    layer: bool = False

    def accepts(self, found: Sequence[tuple[str, str]]) -> bool:
        full = (*self.columns, *self.added)
        if self.layer:
            return [c for c, _ in found] == [c for c, _ in self.columns]
        return len(self.columns) <= len(found) <= len(full) and tuple(found) == full[: len(found)]

    def describe(self) -> str:
        return ", ".join(f"{c} {k}" for c, k in (*self.columns, *self.added))


def kind(data_type: str, scale: int | None = None) -> str:
    """A column's kind, the same on DuckDB and on Snowflake: text, number(scale), time."""
    t = data_type.upper()
    if any(w in t for w in ("CHAR", "TEXT", "STRING")):
        return "text"
    if "TIMESTAMP" in t or t in ("DATE", "DATETIME"):
        return "time"
    if any(w in t for w in ("INT", "NUMBER", "DECIMAL", "NUMERIC")):
        if scale is None and "(" in t:  # DECIMAL(12,2)
            scale = int(t.rsplit(",", 1)[1].rstrip(") ")) if "," in t else 0
        return f"number({scale or 0})"
    return t.lower()


@cache
def shapes() -> dict[str, Shape]:
    """Every table and layer ``sql/`` defines, by lower-case name."""
    out: dict[str, Shape] = {}
    added: dict[str, list[tuple[str, str]]] = {}
    for name, text in sqlfiles.files():
        if not name.startswith((sqlfiles.TABLE_FILES, sqlfiles.LOCAL_FILES)):
            continue
        for e in sqlfiles.parse(sqlfiles.render(text, Names())):
            table = e.find(exp.Table)
            if table is None:
                continue
            key = table.name.lower()
            if isinstance(e, exp.Create):
                cols = tuple(
                    (c.name.lower(), _kind_of(c)) for c in e.find_all(exp.ColumnDef) if c.kind
                )
                out[key] = Shape(key, cols)
            elif isinstance(e, exp.Alter):
                added.setdefault(key, []).extend(
                    (c.name.lower(), _kind_of(c)) for c in e.find_all(exp.ColumnDef) if c.kind
                )
    for key, later in added.items():
        out[key] = Shape(key, out[key].columns, tuple(later))
    for layer in sqlfiles.layers() + sqlfiles.views():
        names = tuple((s.alias_or_name.lower(), "") for s in layer.select.selects)
        out[layer.name.lower()] = Shape(layer.name.lower(), names, layer=True)
    return out


def _kind_of(column: exp.ColumnDef) -> str:
    dtype = column.kind
    assert dtype is not None
    scale = None
    if dtype.this in (exp.DataType.Type.DECIMAL,) and len(dtype.expressions) == 2:
        scale = int(dtype.expressions[1].name)
    return kind(dtype.sql("snowflake"), scale)


_COLUMNS_SQL = (
    "SELECT table_name, column_name, data_type, numeric_scale FROM information_schema.columns "
    "WHERE table_schema = CURRENT_SCHEMA() ORDER BY table_name, ordinal_position"
)


def found(session: SqlSession) -> dict[str, list[tuple[str, str]]]:
    """The tables of the session's current schema: lower-case name -> [(column, kind)]."""
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, dtype, scale in session.execute(_COLUMNS_SQL).fetchall():
        out.setdefault(str(table).lower(), []).append(
            (str(column).lower(), kind(str(dtype), None if scale is None else int(scale)))
        )
    return out


def check(session: SqlSession, where: str, setting: str) -> None:
    """Refuse (TargetConfigError, exit 2) a target whose tables of our names are not ours."""
    tables = found(session)
    for name, shape in shapes().items():
        if name in tables and not shape.accepts(tables[name]):
            have = ", ".join(f"{c} {k}".rstrip() for c, k in tables[name])
            raise TargetConfigError(
                setting,
                f"{where} already has a table {name} that is not ecomm-cdc's ({have}; "
                f"expected {shape.describe()}): nothing was changed. Point ecomm-cdc at a "
                "database or schema of its own",
            )


def foreign_tables(session: SqlSession) -> list[str]:
    """Tables of the current schema that ``sql/`` does not define."""
    return sorted(set(found(session)) - set(shapes()))
