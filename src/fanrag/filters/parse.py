"""Filters from what people write: a JSON object (HTTP, MCP, Python) or a compact string (``--where``).

JSON form: each key of an object is a condition, all of which must hold::

    {"year": 2020}                                   equality
    {"tags": ["a", "b"]}                             in (any of)
    {"year": {"gte": 2018, "lt": 2021}}              eq ne lt lte gt gte in, exists (true or false),
                                                     glob and prefix (source only)
    {"source": {"glob": "docs/**/*.md"}}
    {"or": [{...}, {...}]}, {"and": [...]}, {"not": {...}}

String form, the same terms (``and`` binds tighter than ``or``; keywords in any case)::

    source:docs/**/*.md and year >= 2018 and not (tags in (draft, old) or title = "To do")
    source^=/srv/reports    doc_id in (d1, d2)    modified >= 2024-05-01    not team exists

A value is a quoted string ('...' or "...", backslash escapes the quote), or a bare word (up to a space,
a comma or a parenthesis) that is a number when it reads as one. Every mistake is a ``FilterError``
naming the bad part and where it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

from .model import (
    COLLECTION,
    FIELDS,
    OP_BY_NAME,
    OPS,
    SOURCE,
    TERMS,
    And,
    Compare,
    Exists,
    Filter,
    FilterError,
    In,
    Not,
    Or,
    SourceMatch,
)

MAX_LENGTH = 10_000  # characters of a string filter
MAX_DEPTH = 32  # nesting of and/or/not (a recursive parser must stop somewhere)
_COMBINERS = ("and", "or", "not")  # and "in", "exists" after a field name
# not a tag: keywords, the loader's external id, and collection (``--collection`` sets it)
_RESERVED = (*_COMBINERS, "in", "exists", "meta", "external_id", COLLECTION)
_FIELD = re.compile(r"[A-Za-z_][\w.-]*")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\Z")
_OPERATOR = re.compile(r"!=|<=|>=|\^=|=|<|>|:")


def as_filter(value: Filter | Mapping[str, Any] | str | None) -> Filter | None:
    """Whatever a caller passed as a filter: a ``Filter`` as it is, JSON (a dict), a string, or None."""
    if value is None or isinstance(value, TERMS):
        return value  # type: ignore[return-value]
    if isinstance(value, str):
        return parse_where(value)
    if isinstance(value, Mapping):
        return from_json(value)
    raise FilterError(f"bad filter: a {type(value).__name__}; give a JSON object or a string")


def parse_tag(text: str) -> tuple[str, str | int | float]:
    """``KEY=VALUE`` (``fanrag ingest --tag``): a top-level metadata key that a filter names as it is
    (``--where "KEY = VALUE"``), so not a column's name nor a dotted path; the value is a number when it
    reads as one, as in a filter. A bad tag is a FilterError naming it."""
    key, eq, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not eq or not value:
        raise FilterError(f"bad tag {text!r}: KEY=VALUE")
    _tag_key(key)
    if _NUMBER.match(value):
        return key, float(value) if any(c in value for c in ".eE") else int(value)
    return key, value


def _tag_key(key: str) -> str:
    if not _FIELD.fullmatch(key) or "." in key or key in (*FIELDS, *_RESERVED):
        raise FilterError(f"bad tag key {key!r}: letters, digits, _ and -, and not one of "
                          f"{', '.join(FIELDS)}, {', '.join(_RESERVED)}")
    return key


Scalar = str | int | float | bool
MAX_TAGS = 64


def parse_tags(obj: object) -> dict[str, Scalar | list[Scalar]]:
    """The user's metadata as a JSON object (``metadata`` on an HTTP upload): top-level keys as
    ``parse_tag`` takes them, each value a string, number, boolean or a list of those (a filter's
    ``tags = a`` matches a list holding ``a``). A bad object is a FilterError naming the bad key."""
    if not isinstance(obj, Mapping):
        raise FilterError(f"bad metadata: a JSON object of KEY: VALUE, not a {type(obj).__name__}")
    if len(obj) > MAX_TAGS:
        raise FilterError(f"bad metadata: {len(obj)} keys (at most {MAX_TAGS})")
    out: dict[str, Scalar | list[Scalar]] = {}
    for key, value in obj.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, Scalar) for v in items) or len(items) > MAX_TAGS:
            raise FilterError(f"bad metadata value for {str(key)!r}: a string, number, boolean or a list of those")
        out[_tag_key(str(key))] = value
    return out


# ---------------------------------------------------------------------------------------------- JSON

def from_json(obj: Mapping[str, Any], depth: int = 0) -> Filter:
    if not isinstance(obj, Mapping):
        raise FilterError(f"bad filter: {obj!r} is not an object")
    if not obj:
        raise FilterError("bad filter: an empty object (no condition)")
    if depth > MAX_DEPTH:
        raise FilterError(f"bad filter: nested deeper than {MAX_DEPTH}")
    terms = [_json_term(str(key), value, depth) for key, value in obj.items()]
    return terms[0] if len(terms) == 1 else And(tuple(terms))


def _json_term(key: str, value: Any, depth: int) -> Filter:
    if key in ("and", "or"):
        if not isinstance(value, list) or not value:
            raise FilterError(f"bad filter: '{key}' takes a non-empty list of conditions")
        items = tuple(from_json(v, depth + 1) for v in value)
        return items[0] if len(items) == 1 else (And(items) if key == "and" else Or(items))
    if key == "not":
        return Not(from_json(value, depth + 1))
    if isinstance(value, list):
        return In(key, tuple(value))
    if isinstance(value, Mapping):
        if not value:
            raise FilterError(f"bad filter: {key!r} with an empty object")
        terms = [_json_op(key, str(op), v) for op, v in value.items()]
        return terms[0] if len(terms) == 1 else And(tuple(terms))
    return Compare(key, "=", value)


def _json_op(field: str, op: str, value: Any) -> Filter:
    if op == "in":
        if not isinstance(value, list):
            raise FilterError(f"bad filter: {field!r} 'in' takes a list, not {value!r}")
        return In(field, tuple(value))
    if op == "exists":
        if not isinstance(value, bool):
            raise FilterError(f"bad filter: {field!r} 'exists' takes true or false, not {value!r}")
        return Exists(field) if value else Not(Exists(field))
    if op in ("glob", "prefix"):
        if field != SOURCE:
            raise FilterError(f"bad filter: {op!r} on {field!r}: glob and prefix apply to source only")
        return SourceMatch(op, value)  # type: ignore[arg-type]
    if op not in OP_BY_NAME:
        raise FilterError(f"bad filter operator {op!r} for {field!r}: one of "
                          f"{', '.join([*OP_BY_NAME, 'in', 'exists', 'glob', 'prefix'])}")
    return Compare(field, OP_BY_NAME[op], value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- string

def parse_where(text: str) -> Filter:
    """The string form (module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise FilterError("bad filter: an empty string (no condition)")
    if len(text) > MAX_LENGTH:
        raise FilterError(f"bad filter: {len(text)} characters (at most {MAX_LENGTH})")
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over the text itself: a value's extent depends on what precedes it (a glob
    holds ``*`` and ``/``, a date holds ``:``), so there is no separate tokenizer."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0

    def parse(self) -> Filter:
        flt = self._or()
        self._space()
        if self.pos < len(self.text):
            self._fail("expected 'and', 'or' or the end")
        return flt

    # grammar ---------------------------------------------------------------------------------------
    def _or(self) -> Filter:
        items = [self._and()]
        while self._keyword("or"):
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self) -> Filter:
        items = [self._factor()]
        while self._keyword("and"):
            items.append(self._factor())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _factor(self) -> Filter:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self._fail(f"nested deeper than {MAX_DEPTH}")
        try:
            if self._keyword("not"):
                return Not(self._factor())
            if self._char("("):
                inner = self._or()
                if not self._char(")"):
                    self._fail("expected ')'")
                return inner
            return self._comparison()
        finally:
            self.depth -= 1

    def _comparison(self) -> Filter:
        self._space()
        m = _FIELD.match(self.text, self.pos)
        if m is None or m.group() in _COMBINERS:
            self._fail("expected a field name")
        field = m.group()
        self.pos = m.end()
        if self._keyword("in"):
            return In(field, self._list(field))
        if self._keyword("exists"):
            return Exists(field)
        self._space()
        op = _OPERATOR.match(self.text, self.pos)
        if op is None:
            self._fail(f"expected an operator after {field!r} ({' '.join(OPS)} : ^= in exists)")
        self.pos = op.end()
        if op.group() in (":", "^="):
            if field != SOURCE:
                self._fail(f"{op.group()!r} (glob, prefix) applies to source only, not {field!r}")
            return SourceMatch("glob" if op.group() == ":" else "prefix", str(self._value(field)))
        return Compare(field, op.group(), self._value(field))  # type: ignore[arg-type]

    def _list(self, field: str) -> tuple[str | int | float, ...]:
        if not self._char("("):
            self._fail(f"expected '(' after '{field} in'")
        values = [self._value(field)]
        while self._char(","):
            values.append(self._value(field))
        if not self._char(")"):
            self._fail(f"expected ',' or ')' in the list of {field!r}")
        return tuple(values)

    def _value(self, field: str) -> str | int | float:
        self._space()
        if self.pos < len(self.text) and self.text[self.pos] in "'\"":
            return self._quoted()
        start = self.pos
        while self.pos < len(self.text) and not self.text[self.pos].isspace() and self.text[self.pos] not in "(),":
            self.pos += 1
        word = self.text[start:self.pos]
        if not word:
            self._fail(f"expected a value for {field!r}")
        if field != SOURCE and _NUMBER.match(word):
            return float(word) if any(c in word for c in ".eE") else int(word)
        return word

    def _quoted(self) -> str:
        quote, start = self.text[self.pos], self.pos
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif char == quote:
                return "".join(out)
            else:
                out.append(char)
        self.pos = start
        self._fail("unterminated quoted string")

    # lexing ----------------------------------------------------------------------------------------
    def _space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def _char(self, char: str) -> bool:
        self._space()
        if self.text.startswith(char, self.pos):
            self.pos += 1
            return True
        return False

    def _keyword(self, word: str) -> bool:
        """``word`` (any case) as a whole word at the cursor: consumed if so."""
        self._space()
        end = self.pos + len(word)
        if self.text[self.pos:end].lower() == word and (end == len(self.text) or not
                                                        (self.text[end].isalnum() or self.text[end] in "_.-")):
            self.pos = end
            return True
        return False

    def _fail(self, what: str) -> NoReturn:
        near = self.text[self.pos:self.pos + 24]
        at = f"at column {self.pos + 1}: {near!r}" if near else "at the end"
        raise FilterError(f"bad filter: {what} {at}")
