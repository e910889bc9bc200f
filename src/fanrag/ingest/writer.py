"""The index writer: every change ingestion makes to the stores of an index goes through here.

    sweep()           before a run writes: what a crashed or aborted run left "pending" leaves every
                      store (vectors, keywords, graph, then the rows); its sources are read again
    assemble(piece)   the pieces of a split document (page ranges) join, in order, into one document
    write(batch)      the original file of each source first (blobs); then mark pending (meta), the three
                      index writes at once (vectors, keywords, graph: asyncio.gather over threads; with them
                      the embedding cache's new entries, ``embed/cache.py``), and commit (meta). A
                      StoreError redoes the whole batch (each store write is delete + add, so a redo is
                      harmless)
    record_*          a source's outcome in the metadata store (committed, partial, failed, unchanged)
    finish_run        prune sources whose file is gone, then checkpoint the vector store

A document becomes visible only when the metadata store commits it, after every other store has
acknowledged its writes; a crash in between leaves it "pending", and the next run's sweep removes it
everywhere (a source that is still there is then read again), so that every store holds exactly the
committed chunks. A file that vanishes (or stops being a regular file) between its reading and its write is
its source's failure, never the run's: ``write`` leaves that source's documents out before anything of them
is written, and returns why. The writer keeps no book-keeping per source (the ledger does) and knows
nothing of queues or executors, so the local pipeline and the Celery writer task use it alike. Store calls
run in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from ..embed.cache import EmbedCache
from ..errors import StoreError
from ..ids import path_of
from ..names import one_line
from ..stores import StoreSet
from ..stores.base import SourceRecord
from ..types import Chunk
from .assemble import Assembler, Ready
from .sources import SourceFile
from .summary import StageTimes
from .work import Piece

T = TypeVar("T")

WRITE_RETRIES = 3


class IndexWriter:
    """Assembles documents and writes them, and the outcomes of their sources, to an index's stores.
    ``stages`` receives the write timings (the run summary's, where there is one); ``cache``, where the
    embedding cache is on, gets the vectors this run embedded with each document's write."""

    def __init__(self, stores: StoreSet, stages: StageTimes | None = None, cache: EmbedCache | None = None) -> None:
        self.stores = stores
        self.cache = cache
        self.stages = stages if stages is not None else StageTimes()
        self._assembler = Assembler()
        self._blob_keys: dict[tuple[str, str], str] = {}  # (source uri, content hash) -> blob key: stored once
        self.vanished: dict[str, str] = {}  # source uri -> one-line reason: its file went away mid-run

    async def sweep(self) -> int:
        """Remove every document that a crashed or aborted writer left pending, from every store (vectors,
        keywords and graph entries first, then the rows; their sources are marked to be read again). Run
        it before this writer's first write; returns how many documents."""
        stale = await _io(self.stores.meta.stale_pending)
        return await _io(delete_everywhere, self.stores, stale) if stale else 0

    # ------------------------------------------------------------------ documents

    def assemble(self, piece: Piece, vectors: np.ndarray) -> Ready | None:
        """Add one piece with its chunks' vectors; the whole document once its last piece is in."""
        return self._assembler.add(piece, vectors)

    async def write(self, batch: Sequence[Ready]) -> dict[str, str]:
        """Write and commit complete documents in every store, retrying the whole batch on a StoreError.
        Returns the sources left out because their file vanished (uri -> one-line reason)."""
        t = time.perf_counter()
        for attempt in range(WRITE_RETRIES + 1):
            try:
                left_out = await self._write_once(batch)
                break
            except StoreError:
                if attempt == WRITE_RETRIES:
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)  # a store hiccup: the whole batch again (idempotent)
        self.stages.write += time.perf_counter() - t
        return left_out

    async def _write_once(self, batch: Sequence[Ready]) -> dict[str, str]:
        s = self.stores
        files = {r.doc.source: (r.piece.plan.source.path, r.piece.plan.content_hash) for r in batch}
        # The originals first: a source whose file is gone by now is left out before anything of it is written.
        blob_keys = await self._timed("blobs", self._put_blobs, files)
        batch = [r for r in batch if r.doc.source in blob_keys]
        docs = [r.doc for r in batch]
        chunks = [c for r in batch for c in r.chunks]
        vectors = np.concatenate([r.vectors for r in batch if len(r.vectors)]) if chunks else None
        ids = [d.doc_id for d in docs]
        if docs:
            await _io(s.meta.mark_pending, docs)  # a crash from here on leaves a trace for the next sweep
            # The three index writes are independent: fan out, total = slowest write.
            await asyncio.gather(
                self._timed("vectors", _replace, s.vectors, ids, chunks, vectors),
                self._timed("keywords", _replace, s.keywords, ids, chunks, {d.doc_id: d.title for d in docs}),
                self._timed("graph", _replace, s.graph, ids, chunks),
                self._cache_batch(batch),
            )
            await self._timed("meta", s.meta.commit, docs, chunks, {d.doc_id: blob_keys[d.source] for d in docs})
        return {uri: self.vanished[uri] for uri in files if uri not in blob_keys}

    async def _cache_batch(self, batch: Sequence[Ready]) -> None:
        """The cache entries of these documents (none when the cache is off)."""
        if self.cache is not None:
            docs = [(r.doc.doc_id, [c.indexed_text for c in r.chunks], r.vectors) for r in batch]
            await self._timed("cache", self.cache.store, docs)

    async def _timed(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """One store's write, in a thread; its seconds add up per store over the run."""
        t = time.perf_counter()
        try:
            return await _io(fn, *args)
        finally:
            st = self.stages.write_stores
            st[name] = st.get(name, 0.0) + time.perf_counter() - t

    def _put_blobs(self, files: dict[str, tuple[str, str]]) -> dict[str, str]:
        """The original file of each source, stored once per content (a JSONL file spans many batches):
        source uri -> blob key. A source whose file is gone (or no longer a regular file) is absent, its
        reason in ``vanished``; a StoreError with the file still in place is the store's, and raises."""
        keys = {}
        for uri, (path, digest) in files.items():
            key = self._blob_keys.get((uri, digest))
            if key is None and uri not in self.vanished:
                key = self._put_blob(uri, path)
            if key is not None:
                keys[uri] = self._blob_keys[uri, digest] = key
        return keys

    def _put_blob(self, uri: str, path: str) -> str | None:
        if (gone := _not_a_file(path)) is None:  # checked first: a FIFO put in its place would block the read
            try:
                return self.stores.blobs.put_file(path)
            except StoreError:
                if (gone := _not_a_file(path)) is None:
                    raise
        self.vanished[uri] = one_line(f"{path}: {gone} after it was read; nothing of it was written", path)
        return None

    # ------------------------------------------------------------------ source outcomes

    async def record_unchanged(self, src: SourceFile, *, touch: bool) -> int:
        """A source whose committed version is current; ``touch`` remembers its new stat (same content,
        new mtime). Returns how many documents it holds."""
        rec = await _io(self.stores.meta.get_source, src.uri)
        if touch and rec is not None:
            await _io(self.stores.meta.put_source, SourceRecord(
                uri=rec.uri, content_hash=rec.content_hash, size=src.size, mtime=src.mtime, status="committed",
                n_documents=rec.n_documents, updated_at=time.time()))
        return rec.n_documents if rec else 0

    async def record_failed(self, src: SourceFile, reason: str) -> None:
        """A source that failed as a whole: its documents committed before stay as they were."""
        await _io(self.stores.meta.mark_failed, src.uri, src.uri, reason)
        await _io(self.stores.meta.put_source, SourceRecord(
            uri=src.uri, content_hash="", size=src.size, mtime=src.mtime, status="failed", error=reason,
            updated_at=time.time()))

    async def record_done(self, src: SourceFile, content_hash: str, failures: Sequence[tuple[str, str]],
                          seen: set[str]) -> int:
        """A source whose every document is committed or failed (``failures``: (uri, reason) each).
        Entries it no longer holds (not in ``seen``) leave every store; returns how many. A source with
        failures is "partial" and keeps no hash, so that the next run tries it again."""
        for uri, reason in failures:
            await _io(self.stores.meta.mark_failed, uri, src.uri, reason)
        known = await _io(self.stores.meta.document_hashes, src.uri)
        removed = await _io(delete_everywhere, self.stores, [d for d in known if d not in seen])
        await _io(self.stores.meta.put_source, SourceRecord(
            uri=src.uri, content_hash="" if failures else content_hash, size=src.size, mtime=src.mtime,
            status="partial" if failures else "committed", error="; ".join(r for _, r in failures[:3]),
            n_documents=len(seen), updated_at=time.time()))
        return removed

    # ------------------------------------------------------------------ the end of a run

    async def finish_run(self, *, prune: bool = False) -> int:
        """Prune vanished sources if asked, then checkpoint the vector store; returns documents removed."""
        removed = await _io(self.prune) if prune else 0
        await _io(self.stores.vectors.flush)
        return removed

    def prune(self) -> int:
        """Remove the documents of every file source whose file is gone."""
        removed = 0
        for rec in self.stores.meta.sources():
            path = path_of(rec.uri)  # byte for byte: a name that is not UTF-8 is still found
            if path is not None and not path.exists():
                ids = [d.doc_id for d in self.stores.meta.documents(source=rec.uri)]
                removed += delete_everywhere(self.stores, ids)
                self.stores.meta.delete_source(rec.uri)
        return removed


def delete_everywhere(stores: StoreSet, doc_ids: list[str]) -> int:
    """Remove documents from every store, the metadata store last: a crash midway leaves them listed,
    and the next delete (or re-ingest) finishes the job.

    Their sources are marked first ("partial", no hash: the freshness check reads them again), so that
    re-ingesting an unchanged file brings a deleted document back instead of reporting it unchanged; a
    crash after the mark costs one re-read. A caller that goes on to record the source (a run's
    ``record_done``, ``prune``) overwrites the mark. The embedding cache's entries that these documents
    own leave with them (``embed/cache.py``)."""
    if not doc_ids:
        return 0
    meta = stores.meta
    for uri in {rec.source for rec in map(meta.get_document, dict.fromkeys(doc_ids)) if rec is not None}:
        src = meta.get_source(uri)
        if src is not None and src.status == "committed":
            meta.put_source(dataclasses.replace(src, content_hash="", status="partial", updated_at=time.time(),
                                                error="documents deleted: read again on the next run"))
    for store in (stores.vectors, stores.keywords, stores.graph):
        store.delete_documents(doc_ids)
    meta.evict_cached_vectors(doc_ids)
    return meta.delete_documents(doc_ids)


def _replace(store: Any, ids: list[str], chunks: list[Chunk], *extra: Any) -> None:
    """Delete then write, inside one store: re-ingesting replaces a document's chunks, never adds to them."""
    store.delete_documents(ids)
    if chunks:
        store.add(chunks, *extra)


async def _io(fn: Callable[..., T], *args: Any) -> T:
    """Store calls leave the event loop: a server store's round trip (or outage) must not stall the stages."""
    return await asyncio.to_thread(fn, *args)


def _not_a_file(path: str) -> str | None:
    """Why ``path`` can no longer be stored as the original of its source (None: it still can)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"vanished ({exc.strerror or exc})"
    return None if stat.S_ISREG(mode) else "stopped being a regular file"

