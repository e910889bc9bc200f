"""The ingestion pipeline: three overlapping stages joined by bounded queues.

    sources ──► [plan + load/validate/chunk]  fan-out over worker processes (executor.map_cpu)
                     │ PartResult (bounded queue)
                     ▼
                [embed]  one consumer; gathers chunks across documents into large, length-sorted batches
                         and looks each batch up in the embedding cache first: only misses are embedded
                     │ (Piece, vectors) (bounded queue)
                     ▼
                [assemble + write]  the IndexWriter merges page ranges in order; per batch: mark pending,
                                    then the four store writes at once, then commit

While batch n embeds, batch n+1 is being chunked and batch n-1 written. Barriers stay per document:
a document is chunked only after it loaded and validated, embedded only after all its chunks exist,
and written only after all its vectors exist; it becomes visible only when the metadata store commits
it, after every other store has acknowledged its writes.

This module only schedules. What is current is decided in ``freshness``, what reaches the stores in
``writer``, and what happened to each source (summary, progress, acknowledgements) in ``ledger``.

Scheduling stays bounded whatever a file claims: a part job is O(1) to describe (its range and the plan's
small header, ``work.Parts``), a source has at most ``work.MAX_PARTS`` parts, the jobs in flight are bounded
by slots, and once a source has failed its remaining parts are not run. Anything a job raises (a worker
that crashed, a loader's bug) fails that file alone. Before the first write, the writer sweeps what a
crashed run left pending.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from ..embed.base import Embedder
from ..embed.cache import EmbedCache, identity
from ..settings import Settings
from ..stores import StoreSet
from ..telemetry import ingest as telemetry
from .assemble import Ready, split_rows
from .executors import Executor
from .freshness import Verdict, decide
from .ledger import SourceLedger, SourceState, commit, completed
from .sources import JobSource, PartJob, SourceFile, SourcePlan, iterate_source
from .summary import IngestSummary, Progress
from .work import PartResult, Piece, plan_source, process_part, reason_of, work_config
from .writer import IndexWriter

_DONE = object()  # end-of-stream marker on the queues


class IngestPipeline:
    def __init__(self, settings: Settings, stores: StoreSet, embedder: Embedder, executor: Executor,
                 progress: Progress | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self.executor = executor
        self.progress = progress
        self._cfg = work_config(settings, embedder)
        self._cache_id, self._dim = identity(embedder, settings.embed.max_length), embedder.dim
        self.cache: EmbedCache | None = None  # the last run's embedding cache (its hits and misses)

    @telemetry.run  # a root span when tracing is on (fanrag.telemetry)
    async def arun(self, source: JobSource, *, prune: bool = False) -> IngestSummary:
        t0 = time.perf_counter()
        self.cache = EmbedCache(self.stores.meta, self._cache_id, self._dim) if self.settings.embed.cache else None
        writer = IndexWriter(self.stores, cache=self.cache)
        ledger = telemetry.ledger(writer, source, self.progress)  # its events are spans too when tracing is on
        depth = self.settings.pipeline.queue_depth
        chunks_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth * 4)
        vectors_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
        ledger.summary.swept = await writer.sweep()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._produce(source, ledger, chunks_q))
            tg.create_task(self._embed_stage(ledger, chunks_q, vectors_q))
            tg.create_task(self._write_stage(writer, ledger, vectors_q))
        ledger.missing(getattr(source, "missing", []))
        ledger.summary.removed += await writer.finish_run(prune=prune)
        ledger.summary.wall_s = time.perf_counter() - t0
        return ledger.summary

    # ------------------------------------------------------------------ stage 1: plan + load/chunk

    async def _produce(self, source: JobSource, ledger: SourceLedger, out: asyncio.Queue[Any]) -> None:
        # Bound the CPU jobs in flight (and so memory): a few per worker keeps every process busy.
        slots = asyncio.Semaphore(max(2, self.executor.workers * 2))
        async with asyncio.TaskGroup() as tg:
            async for src in iterate_source(source):
                state = ledger.accept(src)
                if state is None:
                    continue  # the same file named twice
                await slots.acquire()  # backpressure on the walk itself
                tg.create_task(self._run_source(state, ledger, slots, out))
        await out.put(_DONE)

    async def _run_source(self, state: SourceState, ledger: SourceLedger, slots: asyncio.Semaphore,
                          out: asyncio.Queue[Any]) -> None:
        try:
            fresh = await decide(state.src, self.stores.meta, lambda src: self._plan(src, ledger))
        finally:
            slots.release()
        if fresh.verdict is Verdict.UNREADABLE:
            return await ledger.fail(state, str(fresh.plan))
        if fresh.current:
            return await ledger.unchanged(state, touch=fresh.verdict is Verdict.SAME_HASH)
        plan = fresh.plan
        assert isinstance(plan, SourcePlan)
        ledger.planned(state, plan, fresh.known)
        # A collection's committed hashes go with its job only when it is one part: a split one is checked
        # by the ledger, so that no job carries the whole table.
        known = fresh.known if len(plan.parts) == 1 else {}
        async with asyncio.TaskGroup() as tg:
            for i, part in enumerate(plan.parts):
                await slots.acquire()
                if state.error:  # a part failed, or the file vanished: the rest would fail again, or be lost
                    slots.release()
                    ledger.abandon(state, len(plan.parts) - i)
                    break
                tg.create_task(self._run_part(state, PartJob(plan, i, part, known), ledger, slots, out))

    async def _plan(self, src: SourceFile, ledger: SourceLedger) -> SourcePlan | str:
        t = time.perf_counter()
        try:
            plan = await self.executor.map_cpu(plan_source, src, self._cfg)
        except Exception as exc:  # noqa: BLE001 - a crashed worker (or an unpicklable result) fails this file
            return reason_of(exc, src.path)
        ledger.summary.stages.plan += time.perf_counter() - t
        return plan

    async def _run_part(self, state: SourceState, job: PartJob, ledger: SourceLedger, slots: asyncio.Semaphore,
                        out: asyncio.Queue[Any]) -> None:
        try:
            result = await self.executor.map_cpu(process_part, job, self._cfg)
        except Exception as exc:  # noqa: BLE001 - a crashed worker (or an unpicklable result) fails this file
            result = PartResult(job=job, error=reason_of(exc, job.plan.source.path))
        finally:
            slots.release()
        if result.error:  # known before the free slot is taken: the source's next part is not started
            ledger.failing(state, result.error)
        await out.put(result)

    # ------------------------------------------------------------------ stage 2: embed

    async def _embed_stage(self, ledger: SourceLedger, inp: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        """Gather pieces into batches and embed them, ``executor.embed_slots`` batches at a time (1 locally,
        one per actor on Ray); batches go on in the order they were formed."""
        slots = asyncio.Semaphore(max(1, self.executor.embed_slots))
        handoff: asyncio.Queue[asyncio.Task[Any] | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(_forward(handoff, out))
            done = False
            while not done:
                # A free slot first, then gather: the next batch takes everything that arrived meanwhile.
                await slots.acquire()
                pending, done = await self._gather(ledger, inp)
                if not pending:
                    slots.release()
                    continue
                ledger.embedding(pending, inp.qsize())
                task = tg.create_task(self._embed(ledger, pending))
                task.add_done_callback(lambda _: slots.release())
                handoff.put_nowait(task)
            handoff.put_nowait(None)

    async def _gather(self, ledger: SourceLedger, inp: asyncio.Queue[Any]) -> tuple[list[Piece], bool]:
        """One batch: the next part's pieces plus whatever is already waiting, up to ``embed.gather``
        chunks (batches form across documents); True once the input is exhausted."""
        gather = self.settings.embed.gather
        pending: list[Piece] = []
        size = 0
        item = await inp.get()
        while item is not _DONE:
            ledger.summary.stages.load_chunk += item.seconds
            for piece in ledger.part_done(item):
                pending.append(piece)
                size += len(piece.chunks)
            if size >= gather:
                return pending, False
            try:
                item = inp.get_nowait()
            except asyncio.QueueEmpty:
                return pending, False
        return pending, True

    async def _embed(self, ledger: SourceLedger, pieces: list[Piece]) -> list[tuple[Piece, np.ndarray]]:
        texts = [c.indexed_text for p in pieces for c in p.chunks]  # the header is embedded too
        t = time.perf_counter()
        vectors = await self._vectors(texts) if texts else np.zeros((0, 0), np.float32)
        ledger.summary.stages.embed += time.perf_counter() - t
        ledger.embedded(pieces, time.perf_counter() - t)
        return list(zip(pieces, split_rows(vectors, (len(p.chunks) for p in pieces)), strict=True))

    async def _vectors(self, texts: list[str]) -> np.ndarray:
        """Through the embedding cache when it is on: only the texts it does not hold are embedded."""
        if self.cache is None:
            return await self.executor.embed(texts)
        return await self.cache.embed(texts, self.executor.embed)

    # ------------------------------------------------------------------ stage 3: assemble + write

    async def _write_stage(self, writer: IndexWriter, ledger: SourceLedger, inp: asyncio.Queue[Any]) -> None:
        batch: list[Ready] = []
        limit = self.settings.pipeline.write_batch
        while (item := await inp.get()) is not _DONE:
            batch += completed(writer, ledger, item)
            if sum(len(r.chunks) for r in batch) >= limit or (batch and inp.empty()):
                await commit(writer, ledger, batch)
                batch = []
        await commit(writer, ledger, batch)
        await ledger.settle()


async def _forward(handoff: asyncio.Queue[asyncio.Task[Any] | None], out: asyncio.Queue[Any]) -> None:
    while (task := await handoff.get()) is not None:
        await out.put(await task)
    await out.put(_DONE)

