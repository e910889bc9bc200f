"""``fanrag query "TEXT"``: answer a question from an index, with sources; ``--explain`` draws the
fan-out timeline so you can see the branches overlap."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import click

from ..engine import Engine
from ..filters import Filter, FilterError, parse_where
from ..filters.model import both, in_collections
from ..retrieve.phases import Done, Token
from ..retrieve.results import QueryResult
from ..types import BRANCH_NAMES
from .options import home_option, json_option

BAR_WIDTH = 48
COLLECTION_NAME = re.compile(r"[\w.-]{1,128}")


def _branches(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...] | None:
    """``--branches dense,bm25`` or repeated ``--branches dense --branches bm25``."""
    names = [b.strip() for v in value for b in v.split(",") if b.strip()]
    bad = [b for b in names if b not in BRANCH_NAMES]
    if bad:
        raise click.BadParameter(f"unknown branch {bad[0]!r}; choose from {', '.join(BRANCH_NAMES)}")
    return tuple(names) or None


@click.command("query")
@click.argument("text")
@home_option
@json_option
@click.option("--explain", is_flag=True, help="Draw the branch timeline (start/end of each branch).")
@click.option("--top-n", type=click.IntRange(min=1), default=None, help="Chunks in the final context.")
@click.option("--branches", multiple=True, callback=_branches, metavar="NAMES",
              help=f"Comma-separated subset of: {', '.join(BRANCH_NAMES)}.")
@click.option("--no-answer", is_flag=True, help="Retrieve only; do not generate an answer.")
@click.option("--collection", "collections", multiple=True, metavar="NAME", callback=lambda _c, _p, v: collections(v),
              help="Search this collection only (repeatable: several together); documents ingested without "
                   "--collection are in 'default'.")
@click.option("--where", "where", metavar="FILTER", default=None, callback=lambda _c, _p, v: where_filter(v),
              help="Search only the documents this matches, e.g. \"source:docs/** and year >= 2020 and tags in "
                   "(a, b)\" (fields: source, doc_id, title, uri, pages, chunks, modified, any metadata key; "
                   "= != < <= > >= in, source:GLOB, source^=PREFIX; and, or, not, parentheses).")
def query(text: str, home: str | None, as_json: bool, explain: bool, top_n: int | None,
          branches: tuple[str, ...] | None, no_answer: bool, collections: tuple[str, ...], where: Filter | None) -> None:
    """Answer TEXT from the index, citing sources [n]; a model's answer is printed as it is written."""
    # the answer goes to the terminal token by token; --json prints the one result object at the end
    on_token = None if as_json else (lambda tok: click.echo(tok, nl=False))
    with Engine.open(home, mode="read") as engine:
        result = asyncio.run(streamed(engine, text, on_token, branches=branches, top_n=top_n,
                                      generate=not no_answer, filter=scope(collections, where)))
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    if result.answer:
        click.echo("\n")  # ends the streamed answer, then a blank line before the sources
    click.echo(render(result))
    if explain:
        click.echo(timeline(result))


def where_filter(value: str | None) -> Filter | None:
    """``--where``: parsed before the index is opened; a malformed filter is a usage error naming its bad part."""
    try:
        return parse_where(value) if value is not None else None
    except FilterError as exc:
        raise click.BadParameter(str(exc), param_hint="'--where'") from None


def collections(names: tuple[str, ...]) -> tuple[str, ...]:
    """``--collection NAME ...``: each a name of letters, digits, ``_ . -``."""
    bad = next((n for n in names if not COLLECTION_NAME.fullmatch(n)), None)
    if bad is not None:
        raise click.BadParameter(f"{bad!r}: a collection name is letters, digits, _ . and -", param_hint="'--collection'")
    return tuple(dict.fromkeys(names))


def scope(names: tuple[str, ...], where: Filter | None) -> Filter | None:
    """What ``--collection`` and ``--where`` select together."""
    return both(in_collections(names) if names else None, where)


async def streamed(engine: Engine, text: str, on_token: Callable[[str], object] | None, **kw: Any) -> QueryResult:
    """The query through ``Engine.astream``: each answer token to ``on_token`` as the generator writes it
    (a model that fails is followed by its labelled extractive replacement), then the result."""
    phases = engine.astream(text, **kw)
    try:
        async for phase in phases:
            if isinstance(phase, Token) and on_token is not None:
                on_token(phase.text)
            elif isinstance(phase, Done):
                return phase.result
    finally:
        await phases.aclose()
    raise AssertionError("Engine.astream ended without a result")


def render(result: QueryResult) -> str:
    """What follows the streamed answer: its sources and the retrieved chunks, as plain text."""
    lines: list[str] = []
    if result.citations:
        lines.append("Sources:")
        for c in result.citations:
            lines.append(f"  [{c.n}] {c.source}" + (f", page {c.page}" if c.page else "") + f"  ({c.doc_id})")
        lines.append("")
    lines.append(f"Top {len(result.hits)} chunks:")
    for i, h in enumerate(result.hits, start=1):
        snippet = " ".join(h.text.split())[:100]
        where = h.source + (f" p.{h.page}" if h.page else "")
        lines.append(f"  {i}. {h.score:.4f}  {where}  {snippet}")
    return "\n".join(lines)


def _bar(start: float, end: float, total: float) -> str:
    scale = BAR_WIDTH / total if total > 0 else 0.0
    a = min(BAR_WIDTH - 1, int(start * scale))
    b = max(a + 1, min(BAR_WIDTH, round(end * scale)))
    return " " * a + "█" * (b - a) + " " * (BAR_WIDTH - b)


def timeline(result: QueryResult) -> str:
    """One bar per step on a common time axis (ms from the start of the query): the transform, each
    branch with its shard searches under it, fusion, fetch, rerank and generation (``result.spans``)."""
    r = result.retrieval
    total = result.total_ms
    out = [f"timeline, ms (0 .. {total:.1f})"]
    for s in result.spans:
        label = ("  " + s.name) if s.parent else s.name.removeprefix("branch:")
        status = "" if s.status == "ok" else s.status
        out.append(f"  {label:<14}|{_bar(s.start_ms, s.end_ms, total)}| {s.start_ms:7.1f} - {s.end_ms:7.1f}  "
                   f"{status[:60]}")
    slowest, summed = r.slowest_branch_ms, r.branch_sum_ms
    out.append(f"  fan-out wall {r.fanout_ms:.1f} ms; slowest branch {slowest:.1f} ms; "
               f"sum of branches {summed:.1f} ms" + (f" ({summed / r.fanout_ms:.1f}x overlap)" if r.fanout_ms else ""))
    return "\n".join(out)
