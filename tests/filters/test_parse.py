"""The filter language: both written forms, each operator, and/or/not, and malformed input named."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fanrag.errors import QueryError
from fanrag.filters import (
    And,
    Compare,
    Exists,
    FilterError,
    In,
    Not,
    Or,
    SourceMatch,
    as_filter,
    from_json,
    parse_where,
    to_json,
)
from fanrag.filters.model import timestamp


@pytest.mark.parametrize(("text", "expected"), [
    ("year = 2020", Compare("year", "=", 2020)),
    ("year != 2020", Compare("year", "!=", 2020)),
    ("score < 0.5", Compare("score", "<", 0.5)),
    ("score <= 1e3", Compare("score", "<=", 1000.0)),
    ("pages > 3", Compare("pages", ">", 3)),
    ("pages >= 3", Compare("pages", ">=", 3)),
    ("lang = en", Compare("lang", "=", "en")),
    ("title = 'Hello, (world)'", Compare("title", "=", "Hello, (world)")),
    ('title = "say \\"hi\\""', Compare("title", "=", 'say "hi"')),
    ("doc_id = 123", Compare("doc_id", "=", "123")),  # a text column keeps its value as text
    ("tags in (a, 'b c', 3)", In("tags", ("a", "b c", 3))),
    ("tags IN(a)", In("tags", ("a",))),
    ("team exists", Exists("team")),
    ("not team.lead EXISTS", Not(Exists("team.lead"))),
    ("source:docs/**/*.md", SourceMatch("glob", "docs/**/*.md")),
    ("source ^= /srv/reports", SourceMatch("prefix", "/srv/reports")),
    ("source = 2020.txt", Compare("source", "=", "2020.txt")),
    ("team.name = red", Compare("team.name", "=", "red")),
    ("meta.title = x", Compare("meta.title", "=", "x")),
    ("modified >= 2024-05-01", Compare("modified", ">=", timestamp("2024-05-01"))),
])
def test_each_operator(text: str, expected: Any) -> None:
    assert parse_where(text) == expected
    assert from_json(to_json(expected)) == expected


def test_and_binds_tighter_than_or_and_not_and_parentheses_nest() -> None:
    a, b, c = (Compare(x, "=", 1) for x in "abc")
    assert parse_where("a=1 or b=1 and c=1") == Or((a, And((b, c))))
    assert parse_where("(a=1 or b=1) AND c=1") == And((Or((a, b)), c))
    assert parse_where("not a=1 and not (b=1 or c=1)") == And((Not(a), Not(Or((b, c)))))
    assert parse_where("NOT not a = 1") == Not(Not(a))
    assert parse_where("notes = 1") == Compare("notes", "=", 1)  # a field that starts with a keyword


def test_json_form() -> None:
    assert from_json({"year": 2020}) == Compare("year", "=", 2020)
    assert from_json({"tags": ["a", "b"]}) == In("tags", ("a", "b"))
    assert from_json({"year": {"gte": 2018, "lt": 2021}}) == And((Compare("year", ">=", 2018),
                                                                   Compare("year", "<", 2021)))
    assert from_json({"source": {"glob": "**/*.md"}, "lang": "en"}) == And((SourceMatch("glob", "**/*.md"),
                                                                          Compare("lang", "=", "en")))
    assert from_json({"or": [{"a": 1}, {"not": {"b": {"in": [2, 3]}}}]}) == Or(
        (Compare("a", "=", 1), Not(In("b", (2, 3)))))
    assert from_json({"team": {"exists": False}}) == Not(Exists("team"))
    assert as_filter(None) is None
    flt = Compare("a", "=", 1)
    assert as_filter(flt) is flt and as_filter("a = 1") == flt and as_filter({"a": 1}) == flt


@pytest.mark.parametrize(("bad", "named"), [
    ("year >", "expected a value for 'year' at the end"),
    ("year 2020", "expected an operator after 'year'"),
    ("and year = 1", "expected a field name at column 1"),
    ("year = 1 year = 2", "expected 'and', 'or' or the end at column 10: 'year = 2'"),
    ("(year = 1", "expected ')' at the end"),
    ("tags in (a, b", "expected ',' or ')' in the list of 'tags'"),
    ("tags in a", "expected '(' after 'tags in'"),
    ("tags in ()", "expected a value for 'tags'"),
    ("title:x*", "':' (glob, prefix) applies to source only, not 'title'"),
    ("source > x", "'source >'"),
    ("title = 'open", "unterminated quoted string at column 9"),
    ("pages = many", "bad filter value 'many' for 'pages': a number"),
    ("modified > yesterday", "bad filter value 'yesterday' for 'modified'"),
    ("1year = 2", "expected a field name"),
    ("", "an empty string"),
    ("x = 1 or" , "expected a field name at the end"),
    ("(" * 40 + "a=1" + ")" * 40, "nested deeper than 32"),
])
def test_malformed_strings_name_the_bad_part(bad: str, named: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_where(bad)
    assert named in str(err.value)
    assert "\n" not in str(err.value)
    assert isinstance(err.value, QueryError)  # in the errors.py tree: HTTP answers 400


@pytest.mark.parametrize(("bad", "named"), [
    ({}, "an empty object"),
    ({"year": {}}, "'year' with an empty object"),
    ({"year": {"approx": 3}}, "bad filter operator 'approx' for 'year'"),
    ({"title": {"glob": "x*"}}, "'glob' on 'title': glob and prefix apply to source only"),
    ({"and": {"a": 1}}, "'and' takes a non-empty list"),
    ({"or": []}, "'or' takes a non-empty list"),
    ({"not": [1]}, "is not an object"),
    ({"a": {"in": 3}}, "'a' 'in' takes a list"),
    ({"a": {"exists": 1}}, "'a' 'exists' takes true or false, not 1"),
    ({"a": [{"b": 1}]}, "bad filter value {'b': 1} for 'a'"),
    ({"a": None}, "bad filter value None for 'a'"),
    ({"a": True}, "bad filter value True for 'a'"),
    ({"a b": 1}, "bad filter field 'a b'"),
    ({"a": []}, "'a in ()' lists no value"),
    ({"source": {"glob": ""}}, "an empty source glob"),
])
def test_malformed_json_names_the_bad_part(bad: Any, named: str) -> None:
    with pytest.raises(FilterError) as err:
        from_json(bad)
    assert named in str(err.value)


def test_a_filter_of_another_type_is_refused() -> None:
    with pytest.raises(FilterError, match="a list; give a JSON object or a string"):
        as_filter([1, 2])  # type: ignore[arg-type]


_words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True).filter(
    lambda w: w.lower() not in ("and", "or", "not", "in", "meta"))
_values = st.one_of(st.integers(-10**6, 10**6), st.text(min_size=1, max_size=8))
_leaf = st.one_of(
    st.builds(Compare, _words, st.sampled_from(["=", "!=", "<", "<=", ">", ">="]), _values),
    st.builds(In, _words, st.lists(_values, min_size=1, max_size=3).map(tuple)),
    st.builds(SourceMatch, st.sampled_from(["glob", "prefix"]), st.text(min_size=1, max_size=8)),
    st.builds(Exists, _words))
_filters = st.recursive(_leaf, lambda inner: st.one_of(
    st.builds(And, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    st.builds(Or, st.lists(inner, min_size=2, max_size=3).map(tuple)),
    st.builds(Not, inner)), max_leaves=6)


@given(_filters)
def test_the_json_form_round_trips(flt: Any) -> None:
    assert from_json(to_json(flt)) == flt


@given(st.text(max_size=60))
def test_any_string_parses_or_fails_as_a_filter_error(text: str) -> None:
    try:
        parse_where(text)
    except FilterError as err:
        assert "\n" not in str(err) or "\n" in text


def test_rebase_takes_relative_source_paths_from_a_base() -> None:
    from fanrag.filters import rebase

    flt = parse_where("source:docs/*.md or source = a.txt and not source in (b, /c) or year = 1 or source:**/x")
    assert rebase(flt, "/root") == parse_where(
        "source:/root/docs/*.md or source = /root/a.txt and not source in (/root/b, /c) or year = 1 or source:**/x")


def test_parse_tag() -> None:
    from fanrag.filters import parse_tag

    assert parse_tag("team=red") == ("team", "red")
    assert parse_tag(" year = 2024 ") == ("year", 2024)
    assert parse_tag("score=0.5") == ("score", 0.5)
    assert parse_tag("note=a=b") == ("note", "a=b")
    for bad, named in [("team", "bad tag 'team': KEY=VALUE"), ("team=", "KEY=VALUE"), ("a.b=1", "bad tag key 'a.b'"),
                       ("source=x", "bad tag key 'source'"), ("external_id=1", "bad tag key 'external_id'"),
                       ("9x=1", "bad tag key '9x'")]:
        with pytest.raises(FilterError, match=re.escape(named)):
            parse_tag(bad)


@pytest.mark.parametrize(("path", "anchored"), [
    ("docs/*.md", "/srv/work/docs/*.md"), ("./docs/*.md", "/srv/work/docs/*.md"), ("../x/**", "/srv/x/**"),
    ("docs/", "/srv/work/docs/"), ("/abs/*.pdf", "/abs/*.pdf"), ("**/*.md", "**/*.md"), ("s3://b/k", "s3://b/k")])
def test_a_relative_source_is_anchored_as_the_shell_takes_it(path: str, anchored: str) -> None:
    from fanrag.filters.model import anchor

    assert anchor("/srv/work", path) == anchored
