"""A filter as one SQL query over the metadata store: the ids of the committed documents it matches.

    matching_sql(flt, dialect, sources) -> (sql, params)

Columns compare in SQL; ``modified`` joins the sources table (its ``mtime``); a metadata field is a JSON
path: in SQLite ``json_each`` over the path (a list yields its elements, a scalar itself) with a type
guard, so that numbers compare with numbers and text with text; in PostgreSQL a ``jsonpath`` predicate
(lax mode unwraps lists, and a comparison across types is never true). Source paths (glob, prefix,
equality on the decoded path) are resolved in Python against the distinct sources of the index
(``sources()``: one row per file, far fewer than documents), then become ``source IN (...)``: the same
semantics on both databases, exact under ``not``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..selection import compiled_glob, source_path  # the glob of `fanrag ls --source`
from .model import (
    META_PREFIX,
    MODIFIED,
    NUMBER_COLUMNS,
    SOURCE,
    TEXT_COLUMNS,
    And,
    Compare,
    Exists,
    Filter,
    In,
    Not,
    Or,
    SourceMatch,
    Value,
    anchor,
)


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the two metadata stores' SQL."""

    name: str  # sqlite | postgres
    mark: str  # the parameter placeholder
    documents: str
    sources: str


SQLITE = Dialect("sqlite", "?", "documents", "sources")
POSTGRES = Dialect("postgres", "%s", "fanrag_documents", "fanrag_sources")
_FALSE = "1 = 0"


def matching_sql(flt: Filter, dialect: Dialect, sources: Callable[[], Iterable[str]]) -> tuple[str, list[Any]]:
    """The query whose rows are the doc ids of the committed documents ``flt`` matches."""
    compiler = _Compiler(dialect, sources)
    where = compiler.term(flt)
    join = (f" LEFT JOIN {dialect.sources} s ON s.uri = d.source" if compiler.joins_sources else "")
    sql = f"SELECT d.doc_id FROM {dialect.documents} d{join} WHERE d.status = 'committed' AND ({where})"
    return sql, compiler.params


class _Compiler:
    def __init__(self, dialect: Dialect, sources: Callable[[], Iterable[str]]) -> None:
        self.d = dialect
        self.params: list[Any] = []
        self.joins_sources = False
        self._sources = sources
        self._source_list: list[str] | None = None

    def term(self, flt: Filter) -> str:
        if isinstance(flt, SourceMatch) or (isinstance(flt, Compare | In) and flt.field == SOURCE):
            return self._source(flt)
        match flt:
            case And(items):
                return "(" + " AND ".join(self.term(i) for i in items) + ")"
            case Or(items):
                return "(" + " OR ".join(self.term(i) for i in items) + ")"
            case Not(item):
                return f"NOT {self.term(item)}"
            case Compare(field, "!=", value):
                return f"NOT {self.term(Compare(field, '=', value))}"
            case Compare(field, op, value):
                return self._compare(field, op, (value,))
            case In(field, values):
                return self._compare(field, "in", values)
            case Exists(field):
                return self._exists(field)
        raise TypeError(f"not a filter: {flt!r}")

    def _exists(self, field: str) -> str:
        """A column always exists; ``modified`` when the source is recorded; a metadata key when it is set."""
        if field in TEXT_COLUMNS or field in NUMBER_COLUMNS or field == SOURCE:
            return "1 = 1"
        if field == MODIFIED:
            self.joins_sources = True
            return "(s.mtime IS NOT NULL)"
        path = field.removeprefix(META_PREFIX).split(".")
        if self.d.name == "sqlite":
            return f"(json_type(d.metadata, {self._mark(_sqlite_path(path))}) IS NOT NULL)"
        return f"jsonb_path_exists(coalesce(d.metadata, '{{}}'::jsonb), {self._mark(_pg_path(path))}::jsonpath)"

    def _mark(self, value: Any) -> str:
        self.params.append(value)
        return self.d.mark

    def _compare(self, field: str, op: str, values: tuple[Value, ...]) -> str:
        column = TEXT_COLUMNS.get(field) or NUMBER_COLUMNS.get(field)
        if column is not None:
            return self._column(f"d.{column}", op, values)
        if field == MODIFIED:
            self.joins_sources = True
            return self._column("coalesce(s.mtime, 0)", op, values)
        path = field.removeprefix(META_PREFIX).split(".")
        return self._json_sqlite(path, op, values) if self.d.name == "sqlite" else self._json_pg(path, op, values)

    def _column(self, column: str, op: str, values: tuple[Value, ...]) -> str:
        if op == "in":
            return f"({column} IN ({', '.join(self._mark(v) for v in values)}))"
        collate = ' COLLATE "C"' if self.d.name == "postgres" and isinstance(values[0], str) else ""
        return f"({column}{collate} {op} {self._mark(values[0])})"

    def _json_sqlite(self, path: list[str], op: str, values: tuple[Value, ...]) -> str:
        """Any element of the field (the field itself when it is not a list) meets the comparison."""
        source = f"json_each(d.metadata, {self._mark(_sqlite_path(path))})"  # marked first: it comes first
        tests = []
        for kind, group in _by_kind(values).items():
            guard = "e.type = 'text'" if kind is str else "e.type IN ('integer', 'real')"
            if op == "in":
                tests.append(f"({guard} AND e.value IN ({', '.join(self._mark(v) for v in group)}))")
            else:
                tests.append(f"({guard} AND e.value {op} {self._mark(group[0])})")
        return f"EXISTS (SELECT 1 FROM {source} e WHERE {' OR '.join(tests)})"

    def _json_pg(self, path: list[str], op: str, values: tuple[Value, ...]) -> str:
        """A jsonpath predicate: lax mode unwraps a list, and comparing across types is never true."""
        json_op = {"=": "==", "in": "=="}.get(op, op)
        tests = " || ".join(f"@ {json_op} $v{i}" for i in range(len(values)))
        expr = _pg_path(path) + f" ? ({tests})"
        variables = json.dumps({f"v{i}": v for i, v in enumerate(values)})
        return f"jsonb_path_exists(coalesce(d.metadata, '{{}}'::jsonb), {self._mark(expr)}::jsonpath, " \
               f"{self._mark(variables)}::jsonb)"

    def _source(self, flt: Filter) -> str:
        """A source condition as ``source IN (the sources whose path matches)``, resolved here."""
        test = source_test(flt)
        if self._source_list is None:
            self._source_list = list(self._sources())
        found = [s for s in self._source_list if test(source_path(s))]
        if not found:
            return _FALSE
        return f"(d.source IN ({', '.join(self._mark(s) for s in found)}))"


def _sqlite_path(path: list[str]) -> str:
    return "$" + "".join(f'."{key}"' for key in path)  # keys are [\w-]: nothing to escape


def _pg_path(path: list[str]) -> str:
    return "$" + "".join(f".{json.dumps(key)}" for key in path)


def _by_kind(values: tuple[Value, ...]) -> dict[type, list[Value]]:
    """Values split into text and numbers (each compared with its own kind)."""
    out: dict[type, list[Value]] = {}
    for v in values:
        out.setdefault(str if isinstance(v, str) else float, []).append(v)
    return out


def _anchored(pattern: str) -> str:
    """A relative path or pattern taken from the current directory; ``**...`` and absolute ones as they are."""
    return anchor(os.getcwd(), pattern)


def source_test(flt: Filter) -> Callable[[str], bool]:
    """A predicate over a source path for one source condition (=, !=, in, glob, prefix)."""
    match flt:
        case SourceMatch("glob", pattern):
            return compiled_glob(_anchored(pattern)).fullmatch  # type: ignore[return-value]
        case SourceMatch(_, prefix):
            anchored = _anchored(prefix)
            return lambda path: path.startswith(anchored)
        case Compare(_, "=", value):
            return lambda path: path == _anchored(str(value))
        case Compare(_, _, value):
            return lambda path: path != _anchored(str(value))
        case In(_, values):
            wanted = {_anchored(str(v)) for v in values}
            return lambda path: path in wanted
    raise TypeError(f"not a source condition: {flt!r}")
