"""The retriever: transform (sequential) -> fan-out (concurrent) -> fusion (``fusion.py``: score fusion by
default, or RRF) -> committed chunks -> rerank -> lost-in-the-middle order -> answer.

Fan-out: the branches (dense, bm25, subqueries, graph, hop; ``branches.py``, ``hop.py``) are independent, so they start together as
asyncio tasks, each running in a thread of a dedicated pool; the dense branches fan out again, one
search per vector shard, and merge the shards' local top-k. ONNX Runtime, hnswlib, tantivy and SQLite
release the GIL in native code, so the branches really overlap and the fan-out costs about the slowest
branch, not the sum (``--explain`` and ``bench/retrieval.py`` show it); the Python parts (PRF, entity
extraction) still take turns on the GIL. Each branch has a timeout; a branch that fails or times out is
left out of the merge and reported, and the query still answers.

A ``filter`` (``fanrag.filters``: a Filter, its JSON form or its string form) is resolved once per query,
before the fan-out, to the set of committed documents it matches (one SQL query in the metadata store,
span ``filter``); each branch then searches those documents only, so fusion and rerank see nothing else.
A query without a filter runs exactly as before: no extra query, no extra argument to any store.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self, TypeAlias, TypeVar, cast
from urllib.parse import unquote, urlsplit

from ..errors import QueryError
from ..filters import Filter, as_filter
from ..settings import Settings
from ..telemetry import record_query
from ..types import BranchName, Hit
from . import trace
from .branches import (
    BM25Branch,
    Branch,
    BranchOutput,
    DenseBranch,
    GraphBranch,
    SubqueriesBranch,
    VectorSearch,
)
from .factory import create_generator, create_reranker, create_transformer
from .fusion import Fusion
from .generate import Answer, ExtractiveGenerator, Generator, OnToken
from .hop import HopBranch
from .order import lost_in_the_middle
from .phases import Done, Phase, Sources, Token
from .rerank import CachedReranker
from .results import STATUS_TIMEOUT, BranchTiming, QueryResult, RankedList, RerankInfo, RetrievalResult
from .transform import QueryTransformer, TransformResult

if TYPE_CHECKING:
    from ..embed.base import Embedder
    from ..graph.extract import EntityExtractor
    from ..stores import StoreSet
    from ..stores.base import Allowed

log = logging.getLogger(__name__)
T = TypeVar("T")
FilterInput: TypeAlias = "Filter | Mapping[str, Any] | str | None"  # what ``as_filter`` reads
BRANCHES = tuple(BranchName)


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

    ``Engine.retriever`` builds one over the engine's stores and embedder; ``close`` stops its thread
    pools (the stores and the embedder belong to whoever opened them). ``extractor`` finds entity names
    in a query for the graph branch (no graph branch without it).
    """

    def __init__(self, settings: Settings, stores: StoreSet, embedder: Embedder,
                 extractor: EntityExtractor | None = None, *, transformer: QueryTransformer | None = None,
                 reranker: CachedReranker | None = None, generator: Generator | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self.embedder = embedder
        self.extractor = extractor
        self.transformer = transformer or create_transformer(settings)
        self.reranker = reranker if reranker is not None else create_reranker(settings.rerank)
        self.generator = generator or create_generator(settings.llm, embedder)
        shards = stores.vectors.n_shards if stores.vectors is not None else 1
        # Branch bodies (and the other blocking calls) run in _pool, sized for a few concurrent queries;
        # shard searches run in _leaves, sized so one query's shards (and its sub-queries') overlap.
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="fanrag-query")
        self._leaves = ThreadPoolExecutor(max_workers=max(2, 2 * shards), thread_name_prefix="fanrag-shard")
        self.branches: dict[BranchName, Branch] = self._build_branches()
        cfg = settings.retrieval
        self._fusion = Fusion(str(cfg.fusion), cfg.rrf_k, dict(cfg.weights), cfg.fusion_window)

    def _build_branches(self) -> dict[BranchName, Branch]:
        vectors = VectorSearch(self.stores.vectors, self._leaves)
        prf = self.transformer.name != "none"
        found: list[Branch] = [
            DenseBranch(self.embedder, vectors),
            BM25Branch(self.stores.keywords, self.stores.meta, self.settings.retrieval, prf),
            SubqueriesBranch(self.embedder, vectors),
            GraphBranch(getattr(self.stores, "graph", None), self.extractor, self.settings.retrieval.graph_max_entities),
            HopBranch(self.stores.keywords, self.stores.meta, getattr(self.stores, "graph", None), self.extractor),
        ]
        return {b.name: b for b in found}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ plumbing

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the query pool, in a copy of this task's context (so spans reach the query)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, contextvars.copy_context().run, functools.partial(fn, *args))

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

    async def _timed(self, branch: Branch, t: TransformResult, k: int, parallel: bool,
                     t0: float, allowed: Allowed | None) -> tuple[BranchOutput, BranchTiming]:
        """Run one branch under its timeout; a failure or timeout drops its lists and is reported."""
        start = _ms(t0)
        skip = _filter_skip(branch, allowed) or branch.skip_reason(t)
        if skip:
            out = BranchOutput([], skip)
        else:
            out = await self._run_branch(branch, t, k, parallel, allowed)
        end = _ms(t0)
        rec = trace.current.get()
        if rec is not None:
            rec.add(f"branch:{branch.name}", start, end, out.status)
        return out, BranchTiming(start, end, out.status)

    async def _run_branch(self, branch: Branch, t: TransformResult, k: int, parallel: bool,
                          allowed: Allowed | None) -> BranchOutput:
        # only a branch with takes_filter = True gets here with a filter (_filter_skip), and it takes ``allowed``
        run = branch.run if allowed is None else functools.partial(cast(Any, branch).run, allowed=allowed)
        try:
            out = await asyncio.wait_for(self._thread(run, t, k, parallel), self.settings.retrieval.branch_timeout_s)
        except TimeoutError:
            out = BranchOutput([], STATUS_TIMEOUT)
        except Exception as exc:  # one failing branch must not fail the query: it is dropped and reported
            log.warning("branch %s failed: %s", branch.name, exc, exc_info=True)
            out = BranchOutput([], f"error: {type(exc).__name__}: {exc}")
        return out

    # ------------------------------------------------------------------------------------------ public

    def _check_branches(self, branches: Sequence[str] | None) -> tuple[BranchName, ...]:
        chosen = tuple(branches) if branches else self.settings.retrieval.branches
        unknown = [b for b in chosen if b not in self.branches]
        if unknown:
            raise QueryError(f"unknown branch {unknown[0]!r}; known: {', '.join(self.branches)}")
        return tuple(dict.fromkeys(BranchName(b) for b in chosen))

    async def aretrieve(self, text: str, branches: Sequence[str] | None = None, k: int | None = None, *,
                        parallel: bool = True, filter: FilterInput = None,
                        _rec: trace.Recorder | None = None) -> RetrievalResult:
        """Fused, committed hits (at most ``retrieval.candidates``) and every branch's ranked lists.

        ``parallel=False`` runs the same branches one after another (the baseline of the benchmark);
        ``filter`` keeps the documents it matches only (module docstring).
        """
        rec = _rec or trace.Recorder()
        token = trace.current.set(rec)
        try:
            return await self._retrieve(text, branches, k, parallel, as_filter(filter), rec)
        finally:
            trace.current.reset(token)

    async def _allowed(self, flt: Filter, rec: trace.Recorder) -> Allowed:
        """The ids of the committed documents ``flt`` matches, which every branch then searches."""
        with rec.span("filter"):
            return frozenset(await self._thread(self.stores.meta.filter_documents, flt))

    async def _transform(self, text: str) -> TransformResult:
        # rules take ~0.1 ms of pure Python: a thread hop would cost more than it saves the loop
        if getattr(self.transformer, "blocking", True):
            return await self._thread(self.transformer.transform, text)
        return self.transformer.transform(text)

    async def _retrieve(self, text: str, branches: Sequence[str] | None, k: int | None, parallel: bool,
                        flt: Filter | None, rec: trace.Recorder) -> RetrievalResult:
        t0 = rec.t0
        names = self._check_branches(branches)
        if not text.strip():
            raise QueryError("the query is empty")
        k = k or self.settings.retrieval.branch_k
        # the filter's documents are looked up while the query is transformed: neither needs the other
        filtering = None if flt is None else asyncio.ensure_future(self._allowed(flt, rec))
        try:
            t = await self._transform(text)
            transform_ms = _ms(t0)  # the transform's own time: the filter has its span
            allowed = None if filtering is None else await filtering
        finally:
            if filtering is not None and not filtering.done():
                filtering.cancel()
        rec.add("transform", 0.0, transform_ms)
        fan0 = time.perf_counter()
        outs = await self._all([self._timed(self.branches[n], t, k, parallel, t0, allowed) for n in names],
                               parallel)
        fanout_ms = _ms(fan0)
        lists: list[RankedList] = [rl for out, _ in outs for rl in out.lists]
        notes = [*t.trace, *(line for out, _ in outs for line in out.trace)]
        if allowed is not None:
            notes.insert(0, f"filter: {len(allowed)} documents match")
        f0 = time.perf_counter()
        with rec.span("fuse"):
            fused = self.fuse(lists)
        fusion_ms = _ms(f0)
        f1 = time.perf_counter()
        with rec.span("fetch"):
            hits = await self._thread(self._committed, fused, self.settings.retrieval.candidates, allowed)
        return RetrievalResult(
            query=t.normalized, transform=t, hits=hits, lists=lists,
            branches={n: timing for n, (_, timing) in zip(names, outs, strict=True)}, parallel=parallel,
            transform_ms=transform_ms, fanout_ms=fanout_ms, fusion_ms=fusion_ms, fetch_ms=_ms(f1),
            total_ms=_ms(t0), trace=notes, spans=rec.snapshot())

    def fuse(self, lists: Sequence[RankedList]) -> list[tuple[str, float]]:
        """The merge point: every branch list fused into one chunk ranking, best first. Evaluation
        extends the engine's candidates with this same fusion, so there is one definition of it."""
        return self._fusion.fuse([(rl.kind, [(h.chunk_id, h.score) for h in rl.hits]) for rl in lists])

    def _committed(self, fused: list[tuple[str, float]], want: int, allowed: Allowed | None = None) -> list[Hit]:
        """Walk the fused ranking, keeping committed chunks only (``get_chunks`` drops the rest) and,
        under a filter, the allowed documents' only (the branches searched those alone; this holds the
        line should a store not have applied it)."""
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
                if ch is None or (allowed is not None and ch.doc_id not in allowed):
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

    async def _rerank(self, query: str, hits: list[Hit]) -> tuple[list[Hit], RerankInfo]:
        if self.reranker is None:
            return hits, RerankInfo("none", "skipped: no reranker configured (rerank.backend = none)")
        backend, model = str(self.settings.rerank.backend), self.reranker.name
        try:
            scores, cached = await asyncio.wait_for(
                self._thread(self.reranker.score_ids, query, [h.chunk_id for h in hits], [h.text for h in hits]),
                self.settings.rerank.timeout_s)
        except TimeoutError:
            return hits, RerankInfo(backend, "timeout: kept the fused order", model)
        except Exception as exc:  # noqa: BLE001 - a reranker outage degrades to the fused order, reported
            return hits, RerankInfo(backend, f"error: {type(exc).__name__}: {exc}; kept the fused order", model)
        order = sorted(range(len(hits)), key=lambda i: -scores[i])
        reranked = [Hit(hits[i].chunk_id, scores[i], hits[i].doc_id, hits[i].text, hits[i].source, hits[i].page,
                        hits[i].metadata) for i in order]
        return reranked, RerankInfo(backend, "ok", model, scored=len(hits) - cached, cached=cached)

    def numbered(self, top: Sequence[Hit]) -> list[Hit]:
        """``top`` in the order the generator numbers its sources [1]..[n], which its citations refer to."""
        return lost_in_the_middle(top) if self.generator.litm else list(top)

    async def _generate(self, query: str, top: list[Hit], on_token: OnToken | None) -> Answer:
        sources = self.numbered(top)
        try:
            return await self._thread(self.generator.generate, query, sources, on_token)
        except Exception as exc:  # noqa: BLE001 - an LLM outage still returns a (labelled) extractive answer
            log.warning("generation failed: %s", exc)
            ans = ExtractiveGenerator().generate(query, top)
            note = f"[{self.generator.name} failed: {exc}; showing the extractive answer]"
            return Answer(f"{note}\n{ans.text}", ans.citations, backend="extractive", extractive=True)

    async def aquery(self, text: str, *, branches: Sequence[str] | None = None, top_n: int | None = None,
                     generate: bool = True, on_token: OnToken | None = None,
                     rerank: bool | None = None, filter: FilterInput = None) -> QueryResult:
        """Retrieve, rerank, keep ``top_n`` and answer with citations. ``rerank=False`` skips a configured
        reranker for this query (``None``: as configured); ``filter`` searches the documents it matches
        only (``fanrag.filters``)."""
        rec = trace.Recorder()
        ranked = await self._rank(text, branches, top_n, rerank, rec, filter)
        g0 = time.perf_counter()
        answer = await self._generate(ranked.retrieval.query, ranked.top, on_token) if generate else None
        return self._result(ranked, answer, g0, rec)

    async def astream(self, text: str, *, branches: Sequence[str] | None = None, top_n: int | None = None,
                      generate: bool = True, rerank: bool | None = None,
                      filter: FilterInput = None) -> AsyncGenerator[Phase, None]:
        """``aquery`` in phases (``phases.py``): ``Sources`` before generation starts, a ``Token`` per delta
        the generator streams, then ``Done`` with the ``QueryResult``. A model that fails is replaced by the
        labelled extractive answer, as in ``aquery``, sent as one more token. Closing the iterator early
        stops a streaming model at its next delta."""
        rec = trace.Recorder()
        ranked = await self._rank(text, branches, top_n, rerank, rec, filter)
        query = ranked.retrieval.query
        yield Sources(query, self.numbered(ranked.top), ranked.top, ranked.retrieval, ranked.rerank, rec.snapshot())
        g0 = time.perf_counter()
        answer: Answer | None = None
        if generate:
            stop = threading.Event()
            deltas: asyncio.Queue[str | None] = asyncio.Queue()
            task = asyncio.ensure_future(self._generate(query, ranked.top, _relay(deltas, stop)))
            # the deltas were queued from the model's thread before its result: None comes after them
            task.add_done_callback(lambda _: deltas.put_nowait(None))
            streamed = False
            try:
                while (delta := await deltas.get()) is not None:
                    streamed = True
                    yield Token(delta)
                answer = await task
            finally:
                stop.set()
                task.cancel()
            if answer.backend != self.generator.name:  # the model failed: its replacement was not streamed
                yield Token(("\n\n" if streamed else "") + answer.text)
        yield Done(self._result(ranked, answer, g0, rec))

    async def _rank(self, text: str, branches: Sequence[str] | None, top_n: int | None, rerank: bool | None,
                    rec: trace.Recorder, filter: FilterInput = None) -> _Ranked:
        """Every step before the answer: retrieve, rerank (unless ``rerank=False``), keep ``top_n``."""
        t0 = rec.t0
        top_n = top_n or self.settings.retrieval.top_n
        if not 1 <= top_n <= self.settings.retrieval.candidates:
            # the context is cut from the fused candidates: more than those would be silently fewer
            raise QueryError(f"top_n must be in 1..{self.settings.retrieval.candidates} "
                             f"(retrieval.candidates); got {top_n}")
        r = await self.aretrieve(text, branches, filter=filter, _rec=rec)
        r0 = time.perf_counter()
        if rerank is False and self.reranker is not None:
            ranked, rerank_info = r.hits, RerankInfo(str(self.settings.rerank.backend), "skipped: rerank=False")
        else:
            ranked, rerank_info = await self._rerank(r.query, r.hits)
        rerank_ms = _ms(r0)
        rec.add("rerank", _ms(t0) - rerank_ms, _ms(t0), rerank_info.status)
        return _Ranked(r, ranked, ranked[:top_n], rerank_info, rerank_ms)

    def _result(self, ranked: _Ranked, answer: Answer | None, g0: float, rec: trace.Recorder) -> QueryResult:
        """The query's result; ``answer`` is None when generation was not asked for (it started at ``g0``)."""
        t0 = rec.t0
        if answer is not None:
            rec.add("generate", (g0 - t0) * 1000.0, _ms(t0))
        result = QueryResult.build(answer, query=ranked.retrieval.query, hits=ranked.top, candidates=ranked.ranked,
                                   retrieval=ranked.retrieval, rerank=ranked.rerank, rerank_ms=ranked.rerank_ms,
                                   generate_ms=_ms(g0) if answer is not None else 0.0, total_ms=_ms(t0),
                                   spans=rec.snapshot())
        return record_query(result)  # its spans go to OpenTelemetry too when tracing is on

    def query(self, text: str, **kw: Any) -> QueryResult:
        """Synchronous ``aquery`` (do not call from inside a running event loop)."""
        return asyncio.run(self.aquery(text, **kw))

    def retrieve(self, text: str, branches: Sequence[str] | None = None, k: int | None = None, *,
                 parallel: bool = True, filter: FilterInput = None) -> RetrievalResult:
        """Synchronous ``aretrieve``."""
        return asyncio.run(self.aretrieve(text, branches, k, parallel=parallel, filter=filter))

    def close(self) -> None:
        """Stop the thread pools (a branch still running past its timeout finishes on its own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._leaves.shutdown(wait=False, cancel_futures=True)


def _filter_skip(branch: Branch, allowed: Allowed | None) -> str:
    """Why a branch does not run under this filter ('' when it runs): nothing matches, or it cannot
    search a subset (it would return what the filter excludes)."""
    if allowed is None:
        return ""
    if not allowed:
        return "skipped: the filter matches no document"
    return "" if getattr(branch, "takes_filter", False) else "skipped: this branch takes no filter"


@dataclass(frozen=True, slots=True)
class _Ranked:
    """A query up to its answer: the retrieval, every candidate reranked, and the top_n kept."""

    retrieval: RetrievalResult
    ranked: list[Hit]
    top: list[Hit]
    rerank: RerankInfo
    rerank_ms: float


def _relay(deltas: asyncio.Queue[str | None], stop: threading.Event) -> OnToken:
    """An ``on_token`` for the model's thread: each delta into ``deltas`` on the event loop's thread;
    once ``stop`` is set (the reader went away) the next delta raises, which ends the model's stream."""
    loop = asyncio.get_running_loop()

    def on_token(delta: str) -> None:
        if stop.is_set():
            raise QueryError("the streamed answer's reader went away")
        loop.call_soon_threadsafe(deltas.put_nowait, delta)

    return on_token
