"""The SQL in ``sql/``: Snowflake's dialect is the source; local targets get a translation.

Files are applied in name order. ``{{warehouse}}``-style placeholders are
filled with names validated as identifiers before anything is parsed.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from typing import cast

import sqlglot
from sqlglot import exp

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@cache
def files() -> tuple[tuple[str, str], ...]:
    """(name, text) of every ``.sql`` file, in name order."""
    root = resources.files("service.sql")
    found = [(p.name, p.read_text()) for p in root.iterdir() if p.name.endswith(".sql")]
    return tuple(sorted(found))


def render(text: str, names: dict[str, str]) -> str:
    def fill(m: re.Match[str]) -> str:
        return names[m.group(1)]

    return _PLACEHOLDER.sub(fill, text)


def parse(text: str) -> list[exp.Expression]:
    """Parse Snowflake SQL strictly (an unparseable statement raises)."""
    parsed = sqlglot.parse(text, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)
    return [cast(exp.Expression, e) for e in parsed if e is not None]


def statements(prefix: str, names: dict[str, str], dialect: str = "snowflake") -> list[str]:
    """The statements of the files whose names start with ``prefix``, in ``dialect``."""
    out: list[str] = []
    for name, text in files():
        if not name.startswith(prefix):
            continue
        rendered = render(text, names)
        if dialect == "snowflake":
            out += [e.sql("snowflake") for e in parse(rendered)]
        else:
            out += [local(e).sql(dialect) for e in parse(rendered)]
    return out


def local(statement: exp.Expression) -> exp.Expression:
    """Snowflake's semantics for a local target: primary keys are informational.

    Snowflake does not enforce them, so neither does the local copy: an
    enforced key would make DuckDB maintain an index on every write (measured:
    about a third of a batch's cost) for a guarantee the checkpoints already
    give, and that ``ecomm-cdc verify`` checks.
    """
    for node in list(statement.find_all(exp.PrimaryKey, exp.PrimaryKeyColumnConstraint)):
        parent = node.parent
        if isinstance(parent, exp.Constraint | exp.ColumnConstraint):
            parent.pop()
        else:
            node.pop()
    return statement
