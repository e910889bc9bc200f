"""The filter language's terms: frozen dataclasses, validated when built, so a ``Filter`` that exists is
one the metadata stores can run.

    Compare(field, op, value)     = != < <= > >=      (``!=`` is ``not =``: a document without the field matches)
    In(field, values)             any of the values
    Exists(field)                 the document has the field (a metadata key; columns always exist)
    SourceMatch(kind, pattern)    the source file's path: glob (``source:docs/**/*.md``) or prefix
    And(items), Or(items), Not(item)

Fields (``FIELDS``): ``doc_id``, ``uri``, ``title`` (text columns), ``pages``, ``chunks`` (numbers),
``modified`` (the source file's modification time: a number of seconds or an ISO date/datetime, UTC
when it names no zone), ``source`` (the path of the file a document came from), and any other name is a
path into the document's metadata (``year``, ``tags``, ``front_matter``, ``a.b`` for nested keys;
``meta.title`` reaches a metadata key that a column name hides). A metadata value that is a list
matches when one of its elements does (``tags = urgent``); numbers compare with numbers and text with
text (byte order), never across.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeAlias

from ..errors import QueryError

Value: TypeAlias = str | int | float
Op = Literal["=", "!=", "<", "<=", ">", ">="]
OPS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=")
TEXT_COLUMNS = {"doc_id": "doc_id", "uri": "uri", "title": "title"}
NUMBER_COLUMNS = {"pages": "n_pages", "chunks": "n_chunks"}
MODIFIED, SOURCE, META_PREFIX = "modified", "source", "meta."
FIELDS = (*TEXT_COLUMNS, *NUMBER_COLUMNS, MODIFIED, SOURCE)
MAX_VALUES = 10_000  # values in one ``in``: a longer list belongs in a metadata field
_NAME = re.compile(r"[A-Za-z_][\w-]*(?:\.[\w-]+)*\Z")


class FilterError(QueryError):
    """A malformed filter; the message names the bad part in one line."""


def _check_field(field: str) -> None:
    if not isinstance(field, str) or not _NAME.match(field) or field == META_PREFIX.rstrip("."):
        raise FilterError(f"bad filter field {field!r}: a name of letters, digits, _ and -, dotted for nested keys")


def _check_value(field: str, value: object) -> Value:
    """``value`` as the field compares it: text for text columns, a number for numbers, a timestamp
    for ``modified``; anything else is a FilterError naming the field and the value."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise FilterError(f"bad filter value {value!r} for {field!r}: a string or a number")
    if field in TEXT_COLUMNS or field == SOURCE:
        return str(value)
    if field in NUMBER_COLUMNS and not isinstance(value, int | float):
        raise FilterError(f"bad filter value {value!r} for {field!r}: a number")
    if field == MODIFIED:
        return timestamp(value)
    return value


def timestamp(value: Value) -> float:
    """Seconds since the epoch from a number or an ISO 8601 date/datetime (UTC unless it names a zone)."""
    if isinstance(value, int | float):
        return float(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise FilterError(f"bad filter value {value!r} for 'modified': an ISO date (2024-05-01, "
                          "2024-05-01T12:00) or seconds since 1970") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@dataclass(frozen=True, slots=True)
class Compare:
    field: str
    op: Op
    value: Value

    def __post_init__(self) -> None:
        _check_field(self.field)
        if self.op not in OPS:
            raise FilterError(f"bad filter operator {self.op!r} for {self.field!r}: one of {' '.join(OPS)}")
        if self.field == SOURCE and self.op not in ("=", "!="):
            raise FilterError(f"bad filter: 'source {self.op}': a source is matched by =, !=, in, a glob "
                              "(source:PATTERN) or a prefix (source^=PATH)")
        object.__setattr__(self, "value", _check_value(self.field, self.value))


@dataclass(frozen=True, slots=True)
class In:
    field: str
    values: tuple[Value, ...]

    def __post_init__(self) -> None:
        _check_field(self.field)
        if not self.values:
            raise FilterError(f"bad filter: '{self.field} in ()' lists no value")
        if len(self.values) > MAX_VALUES:
            raise FilterError(f"bad filter: '{self.field} in' lists {len(self.values)} values (at most {MAX_VALUES})")
        object.__setattr__(self, "values", tuple(_check_value(self.field, v) for v in self.values))


@dataclass(frozen=True, slots=True)
class SourceMatch:
    """The path of the file a document came from, by glob or by prefix; a relative pattern is taken
    from the current directory (as ``fanrag ls`` takes it), one that opens with ``**`` matches anywhere."""

    kind: Literal["glob", "prefix"]
    pattern: str

    def __post_init__(self) -> None:
        if self.kind not in ("glob", "prefix"):
            raise FilterError(f"bad filter: source match {self.kind!r}: glob or prefix")
        if not isinstance(self.pattern, str) or not self.pattern:
            raise FilterError(f"bad filter: an empty source {self.kind}")


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Filter, ...]

    def __post_init__(self) -> None:
        _check_items("and", self.items)


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Filter, ...]

    def __post_init__(self) -> None:
        _check_items("or", self.items)


@dataclass(frozen=True, slots=True)
class Not:
    item: Filter

    def __post_init__(self) -> None:
        _check_items("not", (self.item,))


@dataclass(frozen=True, slots=True)
class Exists:
    field: str

    def __post_init__(self) -> None:
        _check_field(self.field)


Filter: TypeAlias = Compare | In | SourceMatch | Exists | And | Or | Not
TERMS = (Compare, In, SourceMatch, Exists, And, Or, Not)


def _check_items(name: str, items: tuple[object, ...]) -> None:
    if not items:
        raise FilterError(f"bad filter: '{name}' with nothing to combine")
    bad = next((i for i in items if not isinstance(i, TERMS)), None)
    if bad is not None:
        raise FilterError(f"bad filter: '{name}' holds {bad!r}, not a filter")


COLLECTION, DEFAULT_COLLECTION = "collection", "default"


def in_collections(names: tuple[str, ...]) -> Filter:
    """The documents of these collections: a collection is the value of the ``collection`` metadata key
    (``fanrag ingest --collection``); a document without one is in ``default``."""
    named = In(COLLECTION, names)
    return Or((named, Not(Exists(COLLECTION)))) if DEFAULT_COLLECTION in names else named


def both(first: Filter | None, second: Filter | None) -> Filter | None:
    """Both filters (either may be None: no condition)."""
    if first is None or second is None:
        return first if second is None else second
    return And((first, second))


def leaves(flt: Filter) -> list[Compare | In | SourceMatch | Exists]:
    """The comparisons of a filter, left to right."""
    if isinstance(flt, And | Or):
        return [leaf for item in flt.items for leaf in leaves(item)]
    if isinstance(flt, Not):
        return leaves(flt.item)
    return [flt]


def rebase(flt: Filter, base: str) -> Filter:
    """``flt`` with its relative source paths and patterns taken from ``base`` (an absolute directory)
    rather than the current directory: a server's callers name files relative to its ingest root."""
    match flt:
        case And(items):
            return And(tuple(rebase(i, base) for i in items))
        case Or(items):
            return Or(tuple(rebase(i, base) for i in items))
        case Not(item):
            return Not(rebase(item, base))
        case SourceMatch(kind, pattern):
            return SourceMatch(kind, anchor(base, pattern))
        case Compare(field, op, value) if field == SOURCE:
            return Compare(SOURCE, op, anchor(base, str(value)))
        case In(field, values) if field == SOURCE:
            return In(SOURCE, tuple(anchor(base, str(v)) for v in values))
    return flt


def anchor(base: str, path: str) -> str:
    """``path`` (or pattern) from ``base`` when it is relative; ``**...``, absolute paths and URIs as they are."""
    if path.startswith(("/", "**")) or "://" in path:
        return path
    # normpath: ./docs and ../x as the shell takes them (the paths matched hold no . or ..); a prefix's
    # trailing slash is kept, so that docs/ does not match docs2/
    joined = posixpath.normpath(posixpath.join(base, path))
    return joined + "/" if path.endswith("/") and not joined.endswith("/") else joined


def to_json(flt: Filter) -> dict[str, object]:
    """The JSON form (``parse.from_json`` reads it back to an equal filter)."""
    match flt:
        case And(items):
            return {"and": [to_json(i) for i in items]}
        case Or(items):
            return {"or": [to_json(i) for i in items]}
        case Not(item):
            return {"not": to_json(item)}
        case In(field, values):
            return {field: {"in": list(values)}}
        case SourceMatch(kind, pattern):
            return {SOURCE: {kind: pattern}}
        case Exists(field):
            return {field: {"exists": True}}
        case Compare(field, op, value):
            return {field: {_OP_NAMES[op]: value}}
    raise FilterError(f"not a filter: {flt!r}")


_OP_NAMES = {"=": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
OP_BY_NAME = {name: op for op, name in _OP_NAMES.items()}
