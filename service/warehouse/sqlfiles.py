"""The SQL in ``sql/``: Snowflake's dialect is the source; local targets get a translation.

Files are applied in name order. ``{{warehouse}}``-style placeholders are
filled with :class:`~service.config.Names`, identifiers validated when the
configuration was read. Here, too, the dynamic tables of ``sql/`` become
:class:`Layer` values (their SELECTs), and its task is taken apart.

- ``00*``: the tables (every target);
- ``01*``: the warehouse layers: dynamic tables, and views over them;
- ``02*``: the task (Snowflake only);
- ``03*``: what only a local warehouse needs (the task history).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import cast

import sqlglot
from sqlglot import TokenType, exp
from sqlglot.dialects.snowflake import Snowflake

from ..config import Names

TABLE_FILES = "00"
LAYER_FILES = "01"
TASK_FILES = "02"
LOCAL_FILES = "03"

_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")


@cache
def files() -> tuple[tuple[str, str], ...]:
    """(name, text) of every ``.sql`` file, in name order."""
    root = resources.files("service.sql")
    found = [(p.name, p.read_text()) for p in root.iterdir() if p.name.endswith(".sql")]
    return tuple(sorted(found))


def render(text: str, names: Names) -> str:
    values = names.as_dict()

    def fill(m: re.Match[str]) -> str:
        return values[m.group(1)]

    return _PLACEHOLDER.sub(fill, text)


def parse(text: str) -> list[exp.Expression]:
    """Parse Snowflake SQL strictly (an unparseable statement raises)."""
    parsed = sqlglot.parse(text, read="snowflake", error_level=sqlglot.ErrorLevel.RAISE)
    return [cast(exp.Expression, e) for e in parsed if e is not None]


def statements(prefix: str, names: Names, dialect: str = "snowflake") -> list[str]:
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


def split(text: str) -> list[str]:
    """The statements of a file, as written (Snowflake's tokenizer finds the semicolons)."""
    out: list[str] = []
    begin = 0
    for tok in Snowflake().tokenize(text):
        if tok.token_type == TokenType.SEMICOLON:
            out.append(text[begin : tok.start])
            begin = tok.end + 1
    out.append(text[begin:])
    return [s.strip() for s in out if Snowflake().tokenize(s)]


@contextlib.contextmanager
def quiet_sqlglot() -> Iterator[None]:
    """sqlglot warns that it keeps TASK statements as raw commands: known, and not news."""
    logger = logging.getLogger("sqlglot")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


# -- the warehouse layers and the task ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Layer:
    """A dynamic table (or a view) of ``sql/``: its name and its SELECT (Snowflake's dialect)."""

    name: str
    select: exp.Query
    file: str = ""
    kind: str = "TABLE"  # or VIEW

    def local_sql(self, dialect: str) -> str:
        """``CREATE OR REPLACE TABLE|VIEW name AS <the SELECT, translated>``."""
        create = exp.Create(
            this=exp.to_table(self.name),
            kind=self.kind,
            replace=True,
            expression=self.select.copy(),
        )
        return create.sql(dialect=dialect)


def _is_dynamic(e: exp.Expression) -> bool:
    props = e.args.get("properties")
    return props is not None and any(isinstance(p, exp.DynamicProperty) for p in props.expressions)


def _objects(names: Names | None) -> list[Layer]:
    found: list[Layer] = []
    for name, text in files():
        if not name.startswith(LAYER_FILES):
            continue
        for e in parse(render(text, names or Names())):
            if not isinstance(e, exp.Create) or e.kind not in ("TABLE", "VIEW"):
                continue
            if e.kind == "TABLE" and not _is_dynamic(e):
                continue
            if not isinstance(e.expression, exp.Query):
                raise ValueError(f"{name}: {e.this.name} has no AS SELECT")
            found.append(Layer(e.this.name, e.expression, name, str(e.kind)))
    return found


def layers(names: Names | None = None) -> list[Layer]:
    """The dynamic tables of ``sql/``, in file order (each may read the ones before it)."""
    return [o for o in _objects(names) if o.kind == "TABLE"]


def views(names: Names | None = None) -> list[Layer]:
    """The views of the layer files (over the dynamic tables), in file order."""
    return [o for o in _objects(names) if o.kind == "VIEW"]


def queried() -> list[str]:
    """The layers users query: the views, and the dynamic tables no view reads."""
    found = views()
    behind = {t.name for v in found for t in v.select.find_all(exp.Table)}
    return [v.name for v in found] + [t.name for t in layers() if t.name not in behind]


def _as_written(prefix: str, names: Names) -> list[str]:
    out: list[str] = []
    for name, text in files():
        if name.startswith(prefix):
            text = render(text, names)
            with quiet_sqlglot():
                parse(text)  # refuse to send what does not parse
            out += split(text)
    return out


def layer_ddl(names: Names) -> list[str]:
    """The layer files' statements for Snowflake, rendered, as written."""
    return _as_written(LAYER_FILES, names)


def task_ddl(names: Names) -> list[str]:
    """The task file's statements for Snowflake (the CREATE TASK, then its RESUME)."""
    return _as_written(TASK_FILES, names)


_TASK_RE = re.compile(
    r"^CREATE\s+(?:OR\s+REPLACE\s+)?TASK\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<name>\w+)\s+"
    r"(?P<props>.*?)\bAS\s+(?P<body>.+)$",
    re.IGNORECASE | re.DOTALL,
)


def task_definition(names: Names | None = None) -> dict[str, str]:
    """The task of ``sql/``: name, its properties (WAREHOUSE, SCHEDULE) and body.

    sqlglot has no grammar for tasks (it keeps them as a raw Command), so the
    CREATE TASK is taken apart here, the one place that needs it.
    """
    for name, text in files():
        if not name.startswith(TASK_FILES):
            continue
        for stmt in split(render(text, names or Names())):
            body = "\n".join(ln for ln in stmt.splitlines() if not ln.lstrip().startswith("--"))
            m = _TASK_RE.match(body.strip())
            if m:
                props = dict(
                    (k.upper(), v.strip().strip("'"))
                    for k, v in re.findall(r"(\w+)\s*=\s*('[^']*'|\w+)", m["props"])
                )
                return {"name": m["name"], "body": " ".join(m["body"].split()), **props}
    raise ValueError("sql/ defines no task")


def refresh_statement() -> str:
    """What ``ecomm-cdc refresh`` runs on Snowflake: the body of the task."""
    return task_definition()["body"]


def local_ddl(dialect: str) -> list[str]:
    """The local-only tables (the task history), translated."""
    return statements(LOCAL_FILES, Names(), dialect=dialect)
