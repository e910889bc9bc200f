"""The ingestion pipeline: three overlapping stages joined by bounded queues.

    sources ──► [plan + load/validate/chunk]  fan-out over worker processes (executor.map_cpu)
                     │ PartResult (bounded queue)
                     ▼
                [embed]  one consumer; gathers chunks across documents into large, length-sorted batches
                     │ (Piece, vectors) (bounded queue)
                     ▼
                [assemble + write]  merges page ranges in order; per batch: mark pending, then the four
                                    store writes at once (asyncio.gather over threads), then commit

While batch n embeds, batch n+1 is being chunked and batch n-1 written. Barriers stay per document:
a document is chunked only after it loaded and validated, embedded only after all its chunks exist,
and written only after all its vectors exist; it becomes visible only when the metadata store commits
it, after every other store has acknowledged its writes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..embed.base import Embedder
from ..errors import StoreError
from ..settings import Settings
from ..stores import StoreSet
from ..stores.base import SourceRecord
from ..types import Chunk, Document
from .assemble import Assembler, Ready
from .executors import Executor, WorkerCrashed
from .sources import JobSource, PartJob, SourceFile, SourcePlan
from .summary import IngestSummary, NullProgress, Progress
from .work import PartResult, Piece, WorkConfig, plan_source, process_part

_DONE = object()  # end-of-stream marker on the queues
WRITE_RETRIES = 3


@dataclass
class _SourceState:
    """Book-keeping for one source until all of its documents are committed."""

    src: SourceFile
    plan: SourcePlan | None = None
    parts_left: int = 0
    pending_docs: set[str] = field(default_factory=set)  # produced, not yet committed
    seen_docs: set[str] = field(default_factory=set)  # every doc id the source holds now
    failures: list[tuple[str, str]] = field(default_factory=list)
    committed: int = 0
    error: str = ""

    @property
    def finished(self) -> bool:
        return self.plan is not None and self.parts_left == 0 and not self.pending_docs


class IngestPipeline:
    def __init__(self, settings: Settings, stores: StoreSet, embedder: Embedder, executor: Executor,
                 progress: Progress | None = None) -> None:
        self.settings = settings
        self.stores = stores
        self.embedder = embedder
        self.executor = executor
        self.progress = progress or NullProgress()
        self.summary = IngestSummary()
        self._states: dict[str, _SourceState] = {}
        self._blob_keys: dict[str, str] = {}  # source uri -> blob key, written once per source per run
        self._finished: set[str] = set()  # sources whose outcome is recorded
        self._cfg = work_config(settings, embedder)

    # ------------------------------------------------------------------ run

    async def arun(self, source: JobSource, *, prune: bool = False) -> IngestSummary:
        t0 = time.perf_counter()
        depth = self.settings.pipeline.queue_depth
        chunks_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth * 4)
        vectors_q: asyncio.Queue[Any] = asyncio.Queue(maxsize=depth)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._produce(source, chunks_q))
            tg.create_task(self._embed_stage(chunks_q, vectors_q))
            tg.create_task(self._write_stage(vectors_q, source))
        self.summary.missing_paths = list(getattr(source, "missing", []))
        for path in self.summary.missing_paths:
            self.summary.failed.append((path, "no such file or directory"))
        await self.finish_run(prune=prune)
        self.summary.wall_s = time.perf_counter() - t0
        return self.summary

    async def finish_run(self, *, prune: bool = False) -> None:
        """The end of a run: prune vanished sources if asked, then checkpoint the vector store."""
        if prune:
            self.summary.removed += await asyncio.to_thread(self._prune)
        await asyncio.to_thread(self.stores.vectors.flush)

    async def commit_source(self, src: SourceFile, plan: SourcePlan | str | None,
                            parts: Sequence[tuple[PartResult, np.ndarray]], source: JobSource, *,
                            unchanged: bool = False) -> None:
        """Record one source whose planning, load/chunk and embedding ran elsewhere (a Celery chain), with
        the same assembly, multi-store write, commit and outcome as a local run.

        ``plan`` is the planner's result (a one-line error for a source it could not read; None when the
        stat check found the source unchanged); ``unchanged`` says the committed version is current.
        ``parts`` pairs each part's result with the vectors of its pieces' chunks, in order.
        """
        self.summary.sources += 1
        state = self._states[src.uri] = _SourceState(src)
        self._finished.discard(src.uri)
        self._blob_keys.pop(src.uri, None)
        if unchanged or plan is None:
            state.plan = plan if isinstance(plan, SourcePlan) else None
            return await self._finish_unchanged(state, source, touch=plan is not None)
        if isinstance(plan, str):
            return await self._fail_source(state, source, plan)
        state.plan, state.parts_left = plan, len(parts)
        self.progress.planned(len(parts))
        assembler, batch = Assembler(), []
        for result, vectors in parts:
            i = 0
            for piece in self._accept(result):
                self._assemble(assembler, piece, vectors[i:i + len(piece.chunks)], batch)
                i += len(piece.chunks)
        if batch:
            await self._write(batch, source)
        await self._settle(source)

    # ------------------------------------------------------------------ stage 1: plan + load/chunk

    async def _produce(self, source: JobSource, out: asyncio.Queue[Any]) -> None:
        # Bound the CPU jobs in flight (and so memory): a few per worker keeps every process busy.
        slots = asyncio.Semaphore(max(2, self.executor.workers * 2))
        async with asyncio.TaskGroup() as tg:
            async for src in _iterate(source):
                prev = self._states.get(src.uri)
                if prev is not None and (src.token is None or src.uri not in self._finished):
                    continue  # the same file named twice (a queue's re-delivery after its outcome runs again)
                self._finished.discard(src.uri)
                self._blob_keys.pop(src.uri, None)
                self.summary.sources += 1
                state = self._states[src.uri] = _SourceState(src)
                if await self._unchanged_by_stat(src):
                    await self._finish_unchanged(state, source)
                    continue
                await slots.acquire()  # backpressure on the walk itself
                tg.create_task(self._run_source(state, source, slots, out))
        await out.put(_DONE)

    async def _unchanged_by_stat(self, src: SourceFile) -> bool:
        return unchanged_by_stat(await self._io(self.stores.meta.get_source, src.uri), src)

    async def _run_source(self, state: _SourceState, source: JobSource, slots: asyncio.Semaphore,
                          out: asyncio.Queue[Any]) -> None:
        try:
            t = time.perf_counter()
            plan = await self._cpu(plan_source, state.src, self._cfg)
            self.summary.stages.plan += time.perf_counter() - t
        except WorkerCrashed as exc:
            plan = f"{state.src.path}: {exc}"
        finally:
            slots.release()
        if isinstance(plan, str):
            return await self._fail_source(state, source, plan)
        rec = await self._io(self.stores.meta.get_source, state.src.uri)
        if unchanged_by_hash(rec, plan):
            state.plan = plan
            return await self._finish_unchanged(state, source, touch=True)
        state.plan, state.parts_left = plan, len(plan.parts)
        known = await self._io(self.stores.meta.document_hashes, state.src.uri) if plan.format == "jsonl" else {}
        self.progress.planned(len(plan.parts))
        async with asyncio.TaskGroup() as tg:
            for i, part in enumerate(plan.parts):
                await slots.acquire()
                tg.create_task(self._run_part(PartJob(plan, i, part, known), slots, out))

    async def _run_part(self, job: PartJob, slots: asyncio.Semaphore, out: asyncio.Queue[Any]) -> None:
        try:
            result = await self._cpu(process_part, job, self._cfg)
        except WorkerCrashed as exc:
            result = PartResult(job=job, error=f"{job.plan.source.path}: {exc}")
        finally:
            slots.release()
        self.summary.stages.load_chunk += result.seconds
        await out.put(result)

    async def _cpu(self, fn: Any, *args: Any) -> Any:
        return await self.executor.map_cpu(fn, *args)

    @staticmethod
    async def _io(fn: Any, *args: Any) -> Any:
        """Store calls leave the event loop: a server store's round trip (or outage) must not stall the stages."""
        return await asyncio.to_thread(fn, *args)

    # ------------------------------------------------------------------ stage 2: embed

    async def _embed_stage(self, inp: asyncio.Queue[Any], out: asyncio.Queue[Any]) -> None:
        """Gather pieces into batches and embed them, ``executor.embed_slots`` batches at a time (1 locally,
        one per actor on Ray); batches go on in the order they were formed."""
        slots = asyncio.Semaphore(max(1, getattr(self.executor, "embed_slots", 1)))
        handoff: asyncio.Queue[asyncio.Task[Any] | None] = asyncio.Queue()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._forward(handoff, out))
            done = False
            while not done:
                # A free slot first, then gather: the next batch takes everything that arrived meanwhile.
                await slots.acquire()
                pending, done = await self._gather(inp)
                if not pending:
                    slots.release()
                    continue
                task = tg.create_task(self._embed(pending))
                task.add_done_callback(lambda _: slots.release())
                handoff.put_nowait(task)
            handoff.put_nowait(None)

    async def _gather(self, inp: asyncio.Queue[Any]) -> tuple[list[Piece], bool]:
        """One batch: the next part's pieces plus whatever is already waiting, up to ``embed.gather``
        chunks (batches form across documents); True once the input is exhausted."""
        gather = self.settings.embed.gather
        pending: list[Piece] = []
        size = 0
        item = await inp.get()
        while item is not _DONE:
            for piece in self._accept(item):
                pending.append(piece)
                size += len(piece.chunks)
            if size >= gather:
                return pending, False
            try:
                item = inp.get_nowait()
            except asyncio.QueueEmpty:
                return pending, False
        return pending, True

    @staticmethod
    async def _forward(handoff: asyncio.Queue[asyncio.Task[Any] | None], out: asyncio.Queue[Any]) -> None:
        while (task := await handoff.get()) is not None:
            await out.put(await task)
        await out.put(_DONE)

    def _accept(self, result: PartResult) -> list[Piece]:
        """Record what a part produced; return the pieces that need embedding."""
        state = self._states[result.job.plan.source.uri]
        self.progress.part_done(result.pages, len(result.failures) + bool(result.error))
        self.summary.pages += result.pages
        if result.error:
            state.error = state.error or result.error
        state.failures.extend(result.failures)
        state.seen_docs.update(result.unchanged)
        state.seen_docs.update(_doc_id_of(uri) for uri, _ in result.failures)
        self.summary.unchanged += len(result.unchanged)
        if result.unchanged:
            self.progress.unchanged(len(result.unchanged))
        for piece in result.pieces:
            state.seen_docs.add(piece.doc.doc_id)
            state.pending_docs.add(piece.doc.doc_id)
        state.parts_left -= 1
        return result.pieces

    async def _embed(self, pieces: list[Piece]) -> list[tuple[Piece, np.ndarray]]:
        texts = [c.text for p in pieces for c in p.chunks]
        t = time.perf_counter()
        vectors = await self.executor.embed(texts) if texts else np.zeros((0, 0), np.float32)
        self.summary.stages.embed += time.perf_counter() - t
        out, i = [], 0
        for p in pieces:
            out.append((p, vectors[i:i + len(p.chunks)]))
            i += len(p.chunks)
        return out

    # ------------------------------------------------------------------ stage 3: assemble + write

    async def _write_stage(self, inp: asyncio.Queue[Any], source: JobSource) -> None:
        assembler = Assembler()
        batch: list[Ready] = []
        limit = self.settings.pipeline.write_batch
        while True:
            item = await inp.get()
            if item is _DONE:
                break
            for piece, vecs in item:
                self._assemble(assembler, piece, vecs, batch)
            if sum(len(r.chunks) for r in batch) >= limit or (batch and inp.empty()):
                await self._write(batch, source)
                batch = []
        if batch:
            await self._write(batch, source)
        await self._settle(source)

    def _assemble(self, assembler: Assembler, piece: Piece, vectors: np.ndarray, batch: list[Ready]) -> None:
        """Add a piece; a document whose pieces are all in joins ``batch`` (or is rejected: no text)."""
        ready = assembler.add(piece, vectors)
        if ready is not None and not ready.chunks:
            self._reject(ready, "no text to index (scanned PDF without a text layer? OCR is not supported)")
        elif ready is not None:
            batch.append(ready)

    async def _settle(self, source: JobSource) -> None:
        """Sources whose parts failed or produced nothing new still need their outcome recorded. A split
        document with a failed range never completes in the assembler: its source fails as a whole."""
        for state in list(self._states.values()):
            if state.src.uri in self._finished or state.plan is None:
                continue
            if state.error or state.finished:
                await self._finish(state, source)
            else:
                await self._fail_source(state, source, f"{state.src.path}: incomplete (a part did not finish)")

    def _reject(self, ready: Ready, reason: str) -> None:
        """A document that loaded but has nothing to index (e.g. a split PDF whose pages are all images)."""
        state = self._states[ready.doc.source]
        state.pending_docs.discard(ready.doc.doc_id)
        state.failures.append((ready.piece.plan.source.path if ready.doc.uri == ready.doc.source else ready.doc.uri,
                               reason))

    async def _write(self, batch: list[Ready], source: JobSource) -> None:
        docs = [r.doc for r in batch]
        chunks = [c for r in batch for c in r.chunks]
        vectors = np.concatenate([r.vectors for r in batch if len(r.vectors)]) if chunks else None
        titles = {d.doc_id: d.title for d in docs}
        ids = [d.doc_id for d in docs]
        paths = {d.source: r.piece.plan.source.path for d, r in zip(docs, batch, strict=True)}
        t = time.perf_counter()
        for attempt in range(WRITE_RETRIES + 1):
            try:
                await self._write_once(docs, ids, chunks, vectors, titles, paths)
                break
            except StoreError:
                if attempt == WRITE_RETRIES:
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)  # a store hiccup: the whole batch again (idempotent)
        self.summary.stages.write += time.perf_counter() - t
        self.summary.ok += len(docs)
        self.summary.chunks += len(chunks)
        self.progress.committed(len(docs), len(chunks))
        touched = {}
        for doc in docs:
            state = touched[doc.source] = self._states[doc.source]
            state.pending_docs.discard(doc.doc_id)
            state.committed += 1
        for state in touched.values():
            if state.finished:
                await self._finish(state, source)

    async def _write_once(self, docs: list[Document], ids: list[str], chunks: list[Chunk],
                          vectors: np.ndarray | None, titles: dict[str, str], paths: dict[str, str]) -> None:
        s = self.stores
        await asyncio.to_thread(s.meta.mark_pending, docs)  # a crash from here on leaves a trace to redo

        def timed(name: str, fn: Any, *args: Any) -> Any:
            async def run() -> Any:
                t = time.perf_counter()
                try:
                    return await asyncio.to_thread(fn, *args)
                finally:
                    st = self.summary.stages.write_stores
                    st[name] = st.get(name, 0.0) + time.perf_counter() - t
            return run()

        # The four writes are independent: fan out, total = slowest write.
        results = await asyncio.gather(
            timed("vectors", _replace, s.vectors, ids, chunks, vectors),
            timed("keywords", _replace, s.keywords, ids, chunks, titles),
            timed("graph", _replace, s.graph, ids, chunks),
            timed("blobs", self._put_blobs, paths),
        )
        blob_keys = {d.doc_id: results[3].get(d.source, "") for d in docs}
        await timed("meta", s.meta.commit, docs, chunks, blob_keys)

    def _put_blobs(self, paths: dict[str, str]) -> dict[str, str]:
        keys = {}
        for uri, path in paths.items():
            if uri not in self._blob_keys:
                try:
                    self._blob_keys[uri] = self.stores.blobs.put_file(path)
                except FileNotFoundError:  # vanished after it was read: the chunks are still good
                    self._blob_keys[uri] = ""
            keys[uri] = self._blob_keys[uri]
        return keys

    # ------------------------------------------------------------------ outcomes

    async def _finish_unchanged(self, state: _SourceState, source: JobSource, touch: bool = False) -> None:
        rec = await self._io(self.stores.meta.get_source, state.src.uri)
        n = rec.n_documents if rec else 0
        self.summary.unchanged += n
        self.summary.unchanged_sources += 1
        self.progress.unchanged(n)
        if touch and rec is not None:  # content same, mtime changed: remember the new stat
            await self._io(self.stores.meta.put_source, SourceRecord(
                uri=rec.uri, content_hash=rec.content_hash, size=state.src.size, mtime=state.src.mtime,
                status="committed", n_documents=rec.n_documents, updated_at=time.time()))
        self._finished.add(state.src.uri)
        source.committed(state.src)

    async def _fail_source(self, state: _SourceState, source: JobSource, reason: str) -> None:
        self.summary.failed.append((state.src.path, _strip_path(reason, state.src.path)))
        await self._io(self.stores.meta.mark_failed, state.src.uri, state.src.uri, reason)
        await self._io(self.stores.meta.put_source, SourceRecord(
            uri=state.src.uri, content_hash="", size=state.src.size, mtime=state.src.mtime, status="failed",
            error=reason, updated_at=time.time()))
        self._finished.add(state.src.uri)
        source.failed(state.src, reason)

    async def _finish(self, state: _SourceState, source: JobSource) -> None:
        if state.src.uri in self._finished:
            return
        assert state.plan is not None
        if state.error:
            return await self._fail_source(state, source, state.error)
        for uri, reason in state.failures:
            self.summary.failed.append((uri, _strip_path(reason, uri)))
            await self._io(self.stores.meta.mark_failed, uri, state.src.uri, reason)
        # Entries that vanished from a collection file since the last run leave every store.
        known = await self._io(self.stores.meta.document_hashes, state.src.uri)
        gone = [d for d in known if d not in state.seen_docs]
        if gone:
            self.summary.removed += await self._io(delete_everywhere, self.stores, gone)
        status = "committed" if not state.failures else "partial"
        await self._io(self.stores.meta.put_source, SourceRecord(
            uri=state.src.uri, content_hash=state.plan.content_hash if not state.failures else "",
            size=state.src.size, mtime=state.src.mtime, status=status,
            error="; ".join(r for _, r in state.failures[:3]), n_documents=len(state.seen_docs),
            updated_at=time.time()))
        self._finished.add(state.src.uri)
        if state.failures:
            source.failed(state.src, state.failures[0][1])
        else:
            source.committed(state.src)

    def _prune(self) -> int:
        """Remove documents whose source file is gone."""
        removed = 0
        for rec in self.stores.meta.sources():
            path = _path_of(rec.uri)
            if path is not None and not path.exists():
                ids = [d.doc_id for d in self.stores.meta.documents(source=rec.uri)]
                removed += delete_everywhere(self.stores, ids)
                self.stores.meta.delete_source(rec.uri)
        return removed


def work_config(settings: Settings, embedder: Embedder) -> WorkConfig:
    """What a load/chunk worker needs from the settings and the embedder (its tokenizer)."""
    p = settings.pipeline
    return WorkConfig(
        tokenizer=embedder.tokenizer_spec(), chunk_size=settings.chunk.size,
        chunk_overlap=settings.chunk.overlap, chunk_min=settings.chunk.min_size,
        extractor=settings.stores.entity_extractor,
        pdf_page_threshold=p.pdf_page_threshold, pages_per_range=p.pages_per_range,
        jsonl_docs_per_job=p.jsonl_docs_per_job, max_file_bytes=p.max_file_mb << 20)


def unchanged_by_stat(rec: SourceRecord | None, src: SourceFile) -> bool:
    """Same size and mtime as the committed record: skip without even hashing (like make/rsync)."""
    return bool(rec and rec.status == "committed" and rec.size == src.size and rec.mtime == src.mtime
                and src.size > 0)


def unchanged_by_hash(rec: SourceRecord | None, plan: SourcePlan) -> bool:
    """Same content as the committed version (only the mtime changed)."""
    return bool(rec and rec.status == "committed" and rec.content_hash == plan.content_hash)


def _replace(store: Any, ids: list[str], chunks: list[Chunk], *extra: Any) -> None:
    """Delete then write, inside one store: re-ingesting replaces a document's chunks, never adds to them."""
    store.delete_documents(ids)
    if chunks:
        store.add(chunks, *extra)


def delete_everywhere(stores: StoreSet, doc_ids: list[str]) -> int:
    """Remove documents from every store, the metadata store last: a crash midway leaves them listed,
    and the next delete (or re-ingest) finishes the job."""
    if not doc_ids:
        return 0
    for store in (stores.vectors, stores.keywords, stores.graph):
        store.delete_documents(doc_ids)
    return stores.meta.delete_documents(doc_ids)


async def _iterate(source: JobSource) -> AsyncIterator[SourceFile]:
    """A source may be async-iterable (a queue consumer that waits on the network) or a plain iterable."""
    if hasattr(source, "__aiter__"):
        async for src in source:
            yield src
    else:
        for src in source:
            yield src


def _doc_id_of(uri: str) -> str:
    from ..ids import document_id

    return document_id(uri)


def _strip_path(reason: str, path: str) -> str:
    """Reasons usually start with the file's name; the summary prints it once."""
    for prefix in (f"{path}: ", f"{path}:"):
        if reason.startswith(prefix):
            return reason[len(prefix):]
    return reason


def _path_of(uri: str) -> Path | None:
    if not uri.startswith("file://"):
        return None
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(uri).path))

