"""Streamed answers: ``POST /query`` with ``"stream": true``, as server-sent events, in this order:

    event: sources   {"query", "sources": [{"n", "chunk_id", "doc_id", "source", "page", "score", "text"}],
                      "rerank", "transform", "spans"}          before generation starts; [n] as the prompt
                                                                numbers them, "spans" the steps so far
    event: token     {"text": "..."}                            each answer delta (zero or more)
    event: timings   {"timings": {...}, "spans": [...]}         as in a plain POST /query's result
    event: done      {"answer", "citations", "generator", "extractive", "grounding"?}
    event: error     {"detail": "one line"}                     a failure after the sources went out:
                                                                nothing follows it

A query that fails before its sources (a bad branch, top_n, an empty query) gets the status code and
body that a plain query gets: the first phase is awaited before the response starts. ``citations`` map
each [n] of the final answer to its chunk (the extractive fallback of a failed model numbers its own
sources; resolve [n] through ``citations``). The OpenAI-compatible endpoint streams from the same phases.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any

from ..errors import FanragError
from ..retrieve.phases import Done, Phase, Sources, Token
from ..retrieve.results import QueryResult, hit_dict
from ..types import Hit
from .files import SourceView
from .sse import frame
from .state import AppState

log = logging.getLogger(__name__)

Phases = AsyncGenerator[Phase, None]


async def open_phases(st: AppState, text: str, **kw: Any) -> tuple[Sources, Phases]:
    """A query's first phase (its sources) and the rest; an error before the sources is raised here."""
    phases = st.engine.astream(text, **kw)
    try:
        first = await anext(phases)
    except BaseException:
        st.metrics.queries.labels("error").inc()
        await phases.aclose()
        raise
    assert isinstance(first, Sources)
    return first, phases


def numbered(hits: Sequence[Hit], view: SourceView) -> list[dict[str, Any]]:
    """Sources as the answer numbers them, named for the read API."""
    return [{"n": n, **hit_dict(h), "source": view.name(h.source)} for n, h in enumerate(hits, start=1)]


def sources_event(first: Sources, view: SourceView) -> dict[str, Any]:
    r = first.retrieval
    return {"query": first.query, "sources": numbered(first.numbered, view), "rerank": first.rerank.to_dict(),
            "transform": {"normalized": r.transform.normalized, "subqueries": list(r.transform.subqueries),
                          "rewrites": list(r.transform.rewrites)},
            "spans": [s.to_dict() for s in first.spans]}


def final(st: AppState, result: QueryResult) -> dict[str, Any]:
    """The result as ``POST /query`` returns it (sources named for the read API); counted in the metrics."""
    st.metrics.observe_query(result)
    return st.view.query(result.to_dict()) | {"generator": result.generator, "extractive": result.extractive}


def failure_line(exc: BaseException, view: SourceView) -> str:
    """What a client is told of a failure mid-stream: a fanrag error as it says; anything else by type
    only, as the 500 handler does (the traceback goes to the log)."""
    if isinstance(exc, FanragError):
        return view.scrub(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
    log.error("streamed query failed", exc_info=exc)
    return f"internal error: {type(exc).__name__} (see the server log)"


async def query_events(st: AppState, first: Sources, phases: Phases) -> AsyncIterator[bytes]:
    """The frames of a streamed ``POST /query``."""
    try:
        yield frame("sources", sources_event(first, st.view))
        async for phase in phases:
            if isinstance(phase, Token):
                yield frame("token", {"text": phase.text})
            elif isinstance(phase, Done):
                d = final(st, phase.result)
                yield frame("timings", {"timings": d["timings"], "spans": d["spans"]})
                keys = ("answer", "citations", "generator", "extractive", "grounding")
                yield frame("done", {k: d[k] for k in keys if k in d})
    except Exception as exc:  # noqa: BLE001 - the status line is sent: a failure can only be an event now
        st.metrics.queries.labels("error").inc()
        yield frame("error", {"detail": failure_line(exc, st.view)})
    finally:
        await phases.aclose()
