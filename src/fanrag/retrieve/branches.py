"""The retrieval branches: independent searches that the retriever starts together and fuses.

A branch is one small class with a ``name`` (a ``BranchName``), ``skip_reason(t)`` (why it has nothing to
do for this query, decided on the event loop so a skip costs no thread) and ``run(t, k, parallel)``, which
runs start to finish in one pool thread: its steps depend on each other (embed, then search; search,
then PRF), so handing each step back to the loop would only add wake-ups. Adding a branch is one class
here and one name in ``BranchName``.

A filtered query (``fanrag.filters``) gives ``run`` the ids of the documents it may return (``allowed``),
and the branch hands them to its store, which searches those documents only: each branch ranks the best
``k`` allowed chunks, as deep as without a filter. A branch declares that it does so with
``takes_filter = True``; the retriever skips one that does not under a filter, rather than let it
return what the filter excludes.

A branch never writes to shared state: what it wants to say goes into its ``BranchOutput.trace``, and the
retriever keeps that only when the branch finished in time, so a timed-out branch that is still running
cannot change a result already returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..stores.base import Allowed, ScoredId
from ..stores.merge import merge_shards
from ..types import BranchName
from . import trace
from .results import STATUS_OK, RankedList
from .transform import TransformResult, prf_expand

if TYPE_CHECKING:
    from ..embed.base import Embedder
    from ..graph.extract import EntityExtractor
    from ..settings import RetrievalSettings
    from ..stores.base import GraphStore, KeywordStore, MetaStore, VectorStore


@dataclass(frozen=True, slots=True)
class BranchOutput:
    """What one branch found: its ranked lists, a status (ok, or skipped: why) and trace lines."""

    lists: list[RankedList]
    status: str = STATUS_OK
    trace: tuple[str, ...] = ()


class Branch(Protocol):
    name: BranchName

    def skip_reason(self, t: TransformResult) -> str:
        """Why this branch has nothing to do for ``t`` ('' when it has)."""

    def run(self, t: TransformResult, k: int, parallel: bool) -> BranchOutput:
        """Search; ``parallel=False`` is the benchmark's sequential baseline (no inner fan-out either).
        A branch with ``takes_filter = True`` also takes ``allowed`` (doc ids), and returns only their
        chunks."""


class VectorSearch:
    """Global top-k over a sharded vector store: every shard's local top-k (concurrently), merged.

    Shard searches run in their own pool (``leaves``), which only runs leaf searches that never wait on
    anything, so branch threads waiting for them cannot deadlock the pools under concurrent queries.
    """

    def __init__(self, store: VectorStore, leaves: ThreadPoolExecutor) -> None:
        self.store = store
        self.leaves = leaves

    def search(self, vecs: np.ndarray, k: int, parallel: bool, branch: str = "",
               allowed: Allowed | None = None) -> list[list[ScoredId]]:
        n = self.store.n_shards
        jobs = [(row, shard) for row in range(len(vecs)) for shard in range(n)]
        leaf = self._leaf(branch, len(vecs) > 1, allowed)
        if parallel and len(jobs) > 1:
            futures = [self.leaves.submit(leaf, row, shard, vecs[row], k) for row, shard in jobs]
            parts = [f.result() for f in futures]
        else:
            parts = [leaf(row, shard, vecs[row], k) for row, shard in jobs]
        return [merge_shards(parts[row * n:(row + 1) * n], k) for row in range(len(vecs))]

    def _leaf(self, branch: str, rows: bool,
              allowed: Allowed | None) -> Callable[[int, int, np.ndarray, int], list[ScoredId]]:
        """One shard search, recorded as a span of the query (captured here: leaf threads have no context)."""
        rec = trace.current.get()
        store = self.store

        def search(shard: int, vec: np.ndarray, k: int) -> list[ScoredId]:
            # the unfiltered call stays as it was, for stores written before filters
            return store.search_shard(shard, vec, k) if allowed is None else store.search_shard(shard, vec, k, allowed)

        if rec is None:
            return lambda row, shard, vec, k: search(shard, vec, k)

        def leaf(row: int, shard: int, vec: np.ndarray, k: int) -> list[ScoredId]:
            name = f"shard:{shard}" + (f" q{row + 1}" if rows else "")
            with rec.span(name, parent=f"branch:{branch}"):
                return search(shard, vec, k)
        return leaf


class DenseBranch:
    """The query's embedding against every vector shard."""

    name = BranchName.DENSE
    takes_filter = True

    def __init__(self, embedder: Embedder, vectors: VectorSearch) -> None:
        self.embedder = embedder
        self.vectors = vectors

    def skip_reason(self, t: TransformResult) -> str:
        return ""

    def run(self, t: TransformResult, k: int, parallel: bool, allowed: Allowed | None = None) -> BranchOutput:
        vec = self.embedder.embed_query(t.normalized)
        hits = self.vectors.search(vec[None, :], k, parallel, self.name, allowed)[0]
        return BranchOutput([RankedList(self.name, "dense", t.normalized, hits)])


class SubqueriesBranch:
    """One dense search per sub-question and rewrite, all embedded in one batched forward pass."""

    name = BranchName.SUBQUERIES
    takes_filter = True

    def __init__(self, embedder: Embedder, vectors: VectorSearch) -> None:
        self.embedder = embedder
        self.vectors = vectors

    def skip_reason(self, t: TransformResult) -> str:
        return "" if t.extra_queries() else "skipped: no sub-questions or rewrites"

    def run(self, t: TransformResult, k: int, parallel: bool, allowed: Allowed | None = None) -> BranchOutput:
        extra = t.extra_queries()
        found = self.vectors.search(self.embedder.embed(extra), k, parallel, self.name, allowed)
        return BranchOutput([RankedList(self.name, "subqueries", q, hits) for q, hits in zip(extra, found, strict=True)])


def search_keywords(keywords: KeywordStore, query: str, k: int, allowed: Allowed | None) -> list[ScoredId]:
    """A keyword search, within ``allowed`` under a filter (an unfiltered query passes no extra argument,
    so a store without filter support still serves it)."""
    return keywords.search(query, k) if allowed is None else keywords.search(query, k, allowed)


class BM25Branch:
    """BM25 over the keyword store, then (when enabled) an RM3-style PRF search built from its top hits.

    PRF depends on the first search, so it runs here: the other branches never wait for it.
    """

    name = BranchName.BM25
    takes_filter = True

    def __init__(self, keywords: KeywordStore, meta: MetaStore, cfg: RetrievalSettings, prf: bool) -> None:
        self.keywords = keywords
        self.meta = meta
        self.cfg = cfg
        self.prf = prf and cfg.prf_terms > 0 and cfg.prf_docs > 0

    def skip_reason(self, t: TransformResult) -> str:
        return ""

    def run(self, t: TransformResult, k: int, parallel: bool, allowed: Allowed | None = None) -> BranchOutput:
        hits = self._search(t.normalized, k, allowed)
        lists = [RankedList(self.name, "bm25", t.normalized, hits)]
        if not (self.prf and hits):
            return BranchOutput(lists)
        expanded, weighted = prf_expand(t.normalized, self._feedback(hits), self.cfg.prf_terms)
        if not weighted:
            return BranchOutput(lists)
        lists.append(RankedList(self.name, "prf", expanded, self._search(expanded, k, allowed)))
        return BranchOutput(lists, trace=("prf: " + " ".join(f"{w}({s:g})" for w, s in weighted),))

    def _search(self, query: str, k: int, allowed: Allowed | None) -> list[ScoredId]:
        return search_keywords(self.keywords, query, k, allowed)

    def _feedback(self, hits: Sequence[ScoredId]) -> list[tuple[str, float]]:
        top = hits[: self.cfg.prf_docs]
        chunks = self.meta.get_chunks([h.chunk_id for h in top])
        return [(chunks[h.chunk_id].text, h.score) for h in top if h.chunk_id in chunks]


class GraphBranch:
    """Chunks that mention the query's entities, through the entity graph (one hop).

    It answers entity questions. A query naming more than ``max_entities`` known entities (a pasted
    passage, a long argument: ~50 on ArguAna) is not one, and its graph list was noise that cost 0.02
    nDCG@10 there, so it is skipped.
    """

    name = BranchName.GRAPH
    takes_filter = True

    def __init__(self, graph: GraphStore | None, extractor: EntityExtractor | None, max_entities: int = 8) -> None:
        self.graph = graph
        self.extractor = extractor
        self.max_entities = max_entities

    def skip_reason(self, t: TransformResult) -> str:
        if self.extractor is None or self.graph is None:
            return "skipped: no entity extractor or graph store"
        return ""

    def run(self, t: TransformResult, k: int, parallel: bool, allowed: Allowed | None = None) -> BranchOutput:
        assert self.graph is not None and self.extractor is not None  # skip_reason said so
        candidates = self.extractor.extract_query(t.normalized)
        # the extractor proposes names and n-grams; only those the graph holds are worth a traversal
        names = self.graph.known_entities(candidates) if candidates else []
        if not names:
            return BranchOutput([], "skipped: no known entities in the query")
        if len(names) > self.max_entities:
            return BranchOutput([], f"skipped: {len(names)} known entities in the query (more than "
                                    f"retrieval.graph_max_entities = {self.max_entities}: not an entity question)")
        hits = (self.graph.chunks_for_entities(names, k, 1) if allowed is None
                else self.graph.chunks_for_entities(names, k, 1, allowed))
        return BranchOutput([RankedList(self.name, "graph", ", ".join(names), hits)],
                            trace=("graph: entities " + ", ".join(names),))
