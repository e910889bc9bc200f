"""A finished query's spans (``QueryResult.spans``, the record ``--explain`` and the web UI draw) as
OpenTelemetry spans: one root, ``fanrag.query``, and under it each step as it really ran.

    fanrag.query ─┬ fanrag.transform
                  ├ fanrag.branch.dense ──── fanrag.shard (one per vector shard; per sub-query too)
                  ├ fanrag.branch.bm25 / .subqueries / .graph / .hop   (a skipped one too, marked)
                  ├ fanrag.fuse ─ fanrag.fetch ─ fanrag.rerank ─ fanrag.generate

fanrag's times are milliseconds from the query's start; the query has just ended when this runs (the
hook is where the retriever builds the result), so the root started ``total_ms`` ago and every span is
placed from there. A span whose parent is not in the record (a shard of a branch that timed out) hangs
under the root. The root joins the caller's current span, if any (an HTTP request's, say).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

from .spans import AttrValue, emit, finish, start

if TYPE_CHECKING:
    from ..retrieve.results import QueryResult
    from ..retrieve.trace import Span

MAX_QUERY_CHARS = 1000
_SHARD = re.compile(r"shard:(\d+)(?: q(\d+))?$")


def export(tracer: Any, result: QueryResult) -> None:
    """Emit ``result``'s spans; the query ends now."""
    end_ns = time.time_ns()
    t0_ns = end_ns - int(result.total_ms * 1e6)
    root = start(tracer, "fanrag.query", t0_ns, attributes=_query_attributes(result))
    made: dict[str, Any] = {}
    for span in sorted(result.spans, key=lambda s: bool(s.parent)):  # parents first
        parent = made.get(span.parent, root)
        name, attrs = _describe(span, result)
        made[span.name] = emit(tracer, name, _ns(t0_ns, span.start_ms), _ns(t0_ns, span.end_ms), parent,
                               span.status, attrs)
    finish(root, end_ns)


def _ns(t0_ns: int, ms: float) -> int:
    return t0_ns + int(ms * 1e6)


def _query_attributes(result: QueryResult) -> dict[str, AttrValue]:
    r = result.retrieval
    return {"fanrag.query.text": result.query[:MAX_QUERY_CHARS], "fanrag.hits": len(result.hits),
            "fanrag.candidates": len(result.candidates), "fanrag.parallel": r.parallel,
            "fanrag.branches": list(r.branches), "fanrag.generator": result.generator}


def _describe(span: Span, result: QueryResult) -> tuple[str, dict[str, AttrValue]]:
    """The OpenTelemetry name and attributes of one of fanrag's spans."""
    kind, _, rest = span.name.partition(":")
    if kind == "branch":
        return f"fanrag.branch.{rest}", _branch_attributes(rest, result)
    if kind == "shard":
        return "fanrag.shard", _shard_attributes(span)
    describe = _STEPS.get(span.name)
    return f"fanrag.{span.name}", describe(result) if describe else {}


def _branch_attributes(branch: str, result: QueryResult) -> dict[str, AttrValue]:
    lists = [rl for rl in result.retrieval.lists if rl.branch == branch]
    return {"fanrag.branch": branch, "fanrag.branch.lists": len(lists),
            "fanrag.branch.hits": sum(len(rl.hits) for rl in lists)}


def _shard_attributes(span: Span) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {"fanrag.branch": span.parent.partition(":")[2]}
    if m := _SHARD.match(span.name):
        attrs["fanrag.shard"] = int(m.group(1))
        if m.group(2):
            attrs["fanrag.subquery"] = int(m.group(2))
    return attrs


def _transform(result: QueryResult) -> dict[str, AttrValue]:
    t = result.retrieval.transform
    return {"fanrag.subqueries": len(t.subqueries), "fanrag.rewrites": len(t.rewrites)}


def _fuse(result: QueryResult) -> dict[str, AttrValue]:
    return {"fanrag.lists": len(result.retrieval.lists)}


def _fetch(result: QueryResult) -> dict[str, AttrValue]:
    return {"fanrag.candidates": len(result.retrieval.hits)}


def _rerank(result: QueryResult) -> dict[str, AttrValue]:
    info = result.rerank
    return {"fanrag.rerank.backend": info.backend, "fanrag.rerank.model": info.model,
            "fanrag.rerank.scored": info.scored, "fanrag.rerank.cached": info.cached}


def _generate(result: QueryResult) -> dict[str, AttrValue]:
    return {"fanrag.generator": result.generator, "fanrag.citations": len(result.citations),
            "fanrag.extractive": result.extractive, "fanrag.declined": result.declined}


_STEPS = {"transform": _transform, "fuse": _fuse, "fetch": _fetch, "rerank": _rerank, "generate": _generate}
