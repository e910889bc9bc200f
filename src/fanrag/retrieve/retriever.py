"""The retriever: transform (sequential) -> fan-out (concurrent) -> RRF merge -> committed chunks ->
rerank -> lost-in-the-middle order -> answer.

Fan-out: the branches (dense, bm25, subqueries, graph) are independent, so they start together as
asyncio tasks, each running in a thread of a dedicated pool; the dense branches fan out again, one
search per vector shard, and merge the shards' local top-k. ONNX Runtime, hnswlib, tantivy and SQLite
release the GIL in native code, so the branches really overlap and the fan-out costs about the slowest
branch, not the sum (``--explain`` and ``bench/retrieval.py`` show it); the Python parts (PRF, entity
extraction) still take turns on the GIL. Each branch has a timeout; a branch that fails or times out is
left out of the merge and reported, and the query still answers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

import numpy as np

from ..errors import QueryError
from ..settings import Settings
from ..stores.base import ScoredId
from ..stores.merge import merge_shards
from ..types import Hit
from .fusion import rrf
from .generate import Answer, ExtractiveGenerator, Generator, OnToken, create_generator
from .order import lost_in_the_middle
from .rerank import CachedReranker, create_reranker
from .results import STATUS_OK, STATUS_TIMEOUT, BranchTiming, QueryResult, RankedList, RetrievalResult
from .transform import QueryTransformer, TransformResult, create_transformer, prf_expand

log = logging.getLogger(__name__)
T = TypeVar("T")
BRANCHES = ("dense", "bm25", "subqueries", "graph")
BranchOutput = tuple[list[RankedList], str]


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


def display_source(source: str) -> str:
    """A file URI as a plain path (what a reader recognises); other sources unchanged."""
    if source.startswith("file://"):
        parts = urlsplit(source)
        return unquote(parts.path) + (f"#{parts.fragment}" if parts.fragment else "")
    return source


class Retriever:
    """Query a set of opened stores. Cheap to construct except for the optional reranker model.

    ``stores`` needs ``meta``, ``vectors``, ``keywords`` and ``graph`` attributes (a ``StoreSet``);
    ``extractor`` finds entity names in a query for the graph branch (no graph branch without it).
    """

    def __init__(self, settings: Settings, stores: Any, embedder: Any, extractor: Any = None, *,
                 transformer: QueryTransformer | None = None, reranker: CachedReranker | None = None,
                 generator: Generator | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self.embedder = embedder
        self.extractor = extractor
        self.transformer = transformer or create_transformer(settings)
        self.reranker = reranker if reranker is not None else create_reranker(settings.rerank)
        self.generator = generator or create_generator(settings.llm)
        self._owned: list[Any] = []  # what ``open`` created and ``close`` must close
        shards = getattr(stores.vectors, "n_shards", 1) if stores.vectors is not None else 1
        # Branch bodies (and the other blocking calls) run in _pool, sized for a few concurrent queries;
        # shard searches run in _leaves, sized so one query's shards (and its sub-queries') overlap.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fanrag-query")
        self._leaves = ThreadPoolExecutor(max_workers=max(2, 2 * shards), thread_name_prefix="fanrag-shard")

    @classmethod
    def open(cls, settings: Settings) -> Retriever:
        """Open ``settings.home`` read-only with its embedder and entity extractor; ``close`` closes them."""
        from ..embed import create_embedder
        from ..graph.extract import create_extractor
        from ..stores import open_stores

        embedder = create_embedder(settings.embed)
        try:
            stores = open_stores(settings, mode="read", dim=embedder.dim, model=embedder.name)
        except BaseException:
            embedder.close()
            raise
        try:
            r = cls(settings, stores, embedder, create_extractor(settings.stores.entity_extractor))
        except BaseException:
            stores.close()
            embedder.close()
            raise
        r._owned = [stores, embedder]
        return r

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ plumbing

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    async def _all(self, calls: Sequence[Coroutine[Any, Any, T]], parallel: bool) -> list[T]:
        """Await the calls together, or (``parallel=False``, the benchmark's baseline) one by one."""
        if parallel:
            return list(await asyncio.gather(*calls))
        out: list[T] = []
        try:
            for c in calls:
                out.append(await c)
        finally:
            for c in calls[len(out) + 1:]:  # after a failure, the calls never started
                c.close()
        return out

    # ---------------------------------------------------------------------------------------- branches
    # Each branch runs start to finish in one pool thread. Its steps depend on each other, so handing
    # every step back to the event loop would only add wake-ups, each waiting for a busy loop. The dense
    # branches fan their shard searches out from that thread into a second pool that only runs leaf
    # searches (they never wait on anything), so concurrent queries cannot deadlock the pools.

    def _search_vectors(self, vecs: np.ndarray, k: int, parallel: bool) -> list[list[ScoredId]]:
        """Global top-k for each row of ``vecs``: every shard's local top-k (concurrently), merged."""
        vs = self.stores.vectors
        n = vs.n_shards
        jobs = [(row, shard) for row in range(len(vecs)) for shard in range(n)]
        if parallel and len(jobs) > 1:
            futures = [self._leaves.submit(vs.search_shard, shard, vecs[row], k) for row, shard in jobs]
            parts = [f.result() for f in futures]
        else:
            parts = [vs.search_shard(shard, vecs[row], k) for row, shard in jobs]
        return [merge_shards(parts[row * n:(row + 1) * n], k) for row in range(len(vecs))]

    def _dense(self, t: TransformResult, k: int, parallel: bool, trace: list[str]) -> BranchOutput:
        vec = self.embedder.embed_query(t.normalized)
        return [RankedList("dense", "dense", t.normalized, self._search_vectors(vec[None, :], k, parallel)[0])], \
            STATUS_OK

    def _skip(self, name: str, t: TransformResult) -> str:
        """Why a branch has nothing to do ('' if it has): decided on the loop, so it costs no thread."""
        if name == "subqueries" and not t.extra_queries():
            return "skipped: no sub-questions or rewrites"
        if name == "graph" and (self.extractor is None or getattr(self.stores, "graph", None) is None):
            return "skipped: no entity extractor or graph store"
        return ""

    def _subqueries(self, t: TransformResult, k: int, parallel: bool, trace: list[str]) -> BranchOutput:
        extra = t.extra_queries()
        mat = self.embedder.embed(extra)  # one batched forward pass for all of them
        found = self._search_vectors(mat, k, parallel)
        return [RankedList("subqueries", "subqueries", q, hits) for q, hits in zip(extra, found, strict=True)], \
            STATUS_OK

    def _bm25(self, t: TransformResult, k: int, parallel: bool, trace: list[str]) -> BranchOutput:
        hits = self.stores.keywords.search(t.normalized, k)
        lists = [RankedList("bm25", "bm25", t.normalized, hits)]
        cfg = self.settings.retrieval
        if self.transformer.name != "none" and cfg.prf_terms > 0 and cfg.prf_docs > 0 and hits:
            # PRF depends on this search, so it runs here: the other branches never wait for it.
            top = hits[: cfg.prf_docs]
            chunks = self.stores.meta.get_chunks([h.chunk_id for h in top])
            feedback = [(chunks[h.chunk_id].text, h.score) for h in top if h.chunk_id in chunks]
            expanded, weighted = prf_expand(t.normalized, feedback, cfg.prf_terms)
            if weighted:
                trace.append("prf: " + " ".join(f"{w}({s:g})" for w, s in weighted))
                lists.append(RankedList("bm25", "prf", expanded, self.stores.keywords.search(expanded, k)))
        return lists, STATUS_OK

    def _graph(self, t: TransformResult, k: int, parallel: bool, trace: list[str]) -> BranchOutput:
        graph = self.stores.graph
        candidates = self.extractor.extract_query(t.normalized)
        # the extractor proposes names and n-grams; only those the graph holds are worth a traversal
        names = graph.known_entities(candidates) if candidates else []
        if not names:
            return [], "skipped: no known entities in the query"
        trace.append("graph: entities " + ", ".join(names))
        hits = graph.chunks_for_entities(names, k, 1)
        return [RankedList("graph", "graph", ", ".join(names), hits)], STATUS_OK

    def _branch(self, name: str) -> Callable[[TransformResult, int, bool, list[str]], BranchOutput]:
        return {"dense": self._dense, "subqueries": self._subqueries, "bm25": self._bm25, "graph": self._graph}[name]

    async def _timed(self, name: str, args: tuple[TransformResult, int, bool, list[str]],
                     t0: float) -> tuple[list[RankedList], BranchTiming]:
        start = _ms(t0)
        skip = self._skip(name, args[0])
        if skip:
            return [], BranchTiming(start, _ms(t0), skip)
        try:
            lists, status = await asyncio.wait_for(self._thread(self._branch(name), *args),
                                                   self.settings.retrieval.branch_timeout_s)
        except TimeoutError:
            lists, status = [], STATUS_TIMEOUT
        except Exception as exc:  # one failing branch must not fail the query: it is dropped and reported
            log.warning("branch %s failed: %s", name, exc, exc_info=True)
            lists, status = [], f"error: {type(exc).__name__}: {exc}"
        return lists, BranchTiming(start, _ms(t0), status)

    # ------------------------------------------------------------------------------------------ public

    def _check_branches(self, branches: Sequence[str] | None) -> tuple[str, ...]:
        chosen = tuple(branches) if branches else self.settings.retrieval.branches
        unknown = [b for b in chosen if b not in BRANCHES]
        if unknown:
            raise QueryError(f"unknown branch {unknown[0]!r}; known: {', '.join(BRANCHES)}")
        return tuple(dict.fromkeys(chosen))

    async def aretrieve(self, text: str, branches: Sequence[str] | None = None, k: int | None = None, *,
                        parallel: bool = True, _t0: float | None = None) -> RetrievalResult:
        """Fused, committed hits (at most ``retrieval.candidates``) and every branch's ranked lists.

        ``parallel=False`` runs the same branches one after another (the baseline of the benchmark).
        """
        t0 = _t0 if _t0 is not None else time.perf_counter()
        names = self._check_branches(branches)
        if not text.strip():
            raise QueryError("the query is empty")
        k = k or self.settings.retrieval.branch_k
        # rules take ~0.1 ms of pure Python: a thread hop would cost more than it saves the loop
        if getattr(self.transformer, "blocking", True):
            t = await self._thread(self.transformer.transform, text)
        else:
            t = self.transformer.transform(text)
        transform_ms = _ms(t0)
        trace = list(t.trace)
        fan0 = time.perf_counter()
        works = [self._timed(n, (t, k, parallel, trace), t0) for n in names]
        outs = await self._all(works, parallel)
        fanout_ms = _ms(fan0)
        lists = [rl for out, _ in outs for rl in out]
        f0 = time.perf_counter()
        fused = rrf([(rl.kind, [h.chunk_id for h in rl.hits]) for rl in lists],
                    k=self.settings.retrieval.rrf_k, weights=self.settings.retrieval.weights)
        fusion_ms = _ms(f0)
        f1 = time.perf_counter()
        hits = await self._thread(self._committed, fused, self.settings.retrieval.candidates)
        return RetrievalResult(
            query=t.normalized, transform=t, hits=hits, lists=lists,
            branches={n: timing for n, (_, timing) in zip(names, outs, strict=True)}, parallel=parallel,
            transform_ms=transform_ms, fanout_ms=fanout_ms, fusion_ms=fusion_ms, fetch_ms=_ms(f1),
            total_ms=_ms(t0), trace=trace)

    def _committed(self, fused: list[tuple[str, float]], want: int) -> list[Hit]:
        """Walk the fused ranking, keeping committed chunks only (``get_chunks`` drops the rest)."""
        meta = self.stores.meta
        hits: list[Hit] = []
        docs: dict[str, Any] = {}
        pos = 0
        while len(hits) < want and pos < len(fused):
            window = fused[pos: pos + 2 * want]  # slack for uncommitted ids, usually one round trip
            pos += len(window)
            chunks = meta.get_chunks([cid for cid, _ in window])
            for cid, score in window:
                ch = chunks.get(cid)
                if ch is None:
                    continue
                if ch.doc_id not in docs:
                    docs[ch.doc_id] = meta.get_document(ch.doc_id)
                rec = docs[ch.doc_id]
                if rec is None:
                    continue
                hits.append(Hit(chunk_id=cid, score=score, doc_id=ch.doc_id, text=ch.text,
                                source=display_source(rec.source or rec.uri), page=ch.page_start,
                                metadata={"title": rec.title, "uri": rec.uri, "position": ch.position}))
                if len(hits) >= want:
                    break
        return hits

    async def _rerank(self, query: str, hits: list[Hit]) -> tuple[list[Hit], dict[str, Any]]:
        if self.reranker is None:
            return hits, {"backend": "none", "status": "skipped: no reranker configured (rerank.backend = none)"}
        info: dict[str, Any] = {"backend": self.settings.rerank.backend, "model": self.reranker.name}
        try:
            scores, cached = await asyncio.wait_for(
                self._thread(self.reranker.score_ids, query, [h.chunk_id for h in hits], [h.text for h in hits]),
                self.settings.rerank.timeout_s)
        except TimeoutError:
            return hits, {**info, "status": "timeout: kept the fused order"}
        except Exception as exc:  # noqa: BLE001 - a reranker outage degrades to the fused order, reported
            return hits, {**info, "status": f"error: {type(exc).__name__}: {exc}; kept the fused order"}
        order = sorted(range(len(hits)), key=lambda i: -scores[i])
        reranked = [Hit(hits[i].chunk_id, scores[i], hits[i].doc_id, hits[i].text, hits[i].source, hits[i].page,
                        hits[i].metadata) for i in order]
        return reranked, {**info, "status": "ok", "scored": len(hits) - cached, "cached": cached}

    async def _generate(self, query: str, top: list[Hit], on_token: OnToken | None) -> Answer:
        sources = lost_in_the_middle(top) if self.generator.litm else top
        try:
            return await self._thread(self.generator.generate, query, sources, on_token)
        except Exception as exc:  # noqa: BLE001 - an LLM outage still returns a (labelled) extractive answer
            log.warning("generation failed: %s", exc)
            ans = ExtractiveGenerator().generate(query, top)
            note = f"[{self.generator.name} failed: {exc}; showing the extractive answer]"
            return Answer(f"{note}\n{ans.text}", ans.citations, backend="extractive", extractive=True)

    async def aquery(self, text: str, *, branches: Sequence[str] | None = None, top_n: int | None = None,
                     generate: bool = True, on_token: OnToken | None = None) -> QueryResult:
        """Retrieve, rerank, keep ``top_n`` and answer with citations."""
        t0 = time.perf_counter()
        top_n = top_n or self.settings.retrieval.top_n
        if top_n < 1:
            raise QueryError("top_n must be >= 1")
        r = await self.aretrieve(text, branches, _t0=t0)
        r0 = time.perf_counter()
        ranked, rerank_info = await self._rerank(r.query, r.hits)
        rerank_ms = _ms(r0)
        top = ranked[:top_n]
        g0 = time.perf_counter()
        answer = await self._generate(r.query, top, on_token) if generate else None
        return QueryResult.build(answer, query=r.query, hits=top, retrieval=r, rerank=rerank_info,
                                 rerank_ms=rerank_ms, generate_ms=_ms(g0) if generate else 0.0, total_ms=_ms(t0))

    def query(self, text: str, *, branches: Sequence[str] | None = None, top_n: int | None = None,
              generate: bool = True, on_token: OnToken | None = None) -> QueryResult:
        """Synchronous ``aquery`` (do not call from inside a running event loop)."""
        return asyncio.run(self.aquery(text, branches=branches, top_n=top_n, generate=generate, on_token=on_token))

    def retrieve(self, text: str, branches: Sequence[str] | None = None, k: int | None = None, *,
                 parallel: bool = True) -> RetrievalResult:
        """Synchronous ``aretrieve``."""
        return asyncio.run(self.aretrieve(text, branches, k, parallel=parallel))

    def close(self) -> None:
        """Stop the thread pool; close the stores and embedder only if ``open`` created them."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._leaves.shutdown(wait=False, cancel_futures=True)
        for thing in self._owned:
            thing.close()
        self._owned = []
