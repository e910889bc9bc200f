"""A query in phases, for a caller that shows it as it happens (the server's streamed answers).

``Retriever.astream`` yields, in this order:

    Sources   the final top_n, numbered [1]..[n] as the generator numbers them; yielded before generation
              starts, so a reader sees what the answer will stand on while it is being written
    Token     each answer delta, as the generator streams it (the extractive generator, which does not
              stream, sends its whole answer as one)
    Done      the ``QueryResult`` that ``aquery`` would have returned (answer, citations, spans, timings)

``aquery`` and ``astream`` share every step up to the answer (``Retriever._rank``), so a streamed query
ranks, reranks and cites exactly as a plain one does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..types import Hit
from .results import QueryResult, RerankInfo, RetrievalResult
from .trace import Span


@dataclass(frozen=True, slots=True)
class Sources:
    """What the answer will cite. ``numbered[i]`` is source [i + 1] of the generator's prompt (the
    lost-in-the-middle order for a language model; relevance order for the extractive generator);
    ``hits`` is the same top_n in relevance order. ``spans`` holds the steps that ran so far."""

    query: str
    numbered: list[Hit]
    hits: list[Hit]
    retrieval: RetrievalResult
    rerank: RerankInfo
    spans: list[Span] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Done:
    result: QueryResult


Phase = Sources | Token | Done
