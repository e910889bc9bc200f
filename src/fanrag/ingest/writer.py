"""The index writer: every change ingestion makes to the stores of an index goes through here.

    assemble(piece)   the pieces of a split document (page ranges) join, in order, into one document
    write(batch)      mark pending (meta), then the four store writes at once (vectors, keywords, graph,
                      blobs: asyncio.gather over threads), then commit (meta). A StoreError redoes the
                      whole batch (each store write is delete + add, so a redo is harmless)
    record_*          a source's outcome in the metadata store (committed, partial, failed, unchanged)
    finish_run        prune sources whose file is gone, then checkpoint the vector store

A document becomes visible only when the metadata store commits it, after every other store has
acknowledged its writes; a crash in between leaves it "pending" for the next run to redo. The writer keeps
no book-keeping per source (the ledger does) and knows nothing of queues or executors, so the local
pipeline and the Celery writer task use it alike. Store calls run in threads, off the event loop.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

import numpy as np

from ..errors import StoreError
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
    ``stages`` receives the write timings (the run summary's, where there is one)."""

    def __init__(self, stores: StoreSet, stages: StageTimes | None = None) -> None:
        self.stores = stores
        self.stages = stages if stages is not None else StageTimes()
        self._assembler = Assembler()
        self._blob_keys: dict[tuple[str, str], str] = {}  # (source uri, content hash) -> blob key: stored once

    # ------------------------------------------------------------------ documents

    def assemble(self, piece: Piece, vectors: np.ndarray) -> Ready | None:
        """Add one piece with its chunks' vectors; the whole document once its last piece is in."""
        return self._assembler.add(piece, vectors)

    async def write(self, batch: Sequence[Ready]) -> None:
        """Write and commit complete documents in every store, retrying the whole batch on a StoreError."""
        t = time.perf_counter()
        for attempt in range(WRITE_RETRIES + 1):
            try:
                await self._write_once(batch)
                break
            except StoreError:
                if attempt == WRITE_RETRIES:
                    raise
                await asyncio.sleep(0.5 * 2 ** attempt)  # a store hiccup: the whole batch again (idempotent)
        self.stages.write += time.perf_counter() - t

    async def _write_once(self, batch: Sequence[Ready]) -> None:
        s = self.stores
        docs = [r.doc for r in batch]
        chunks = [c for r in batch for c in r.chunks]
        vectors = np.concatenate([r.vectors for r in batch if len(r.vectors)]) if chunks else None
        ids = [d.doc_id for d in docs]
        files = {r.doc.source: (r.piece.plan.source.path, r.piece.plan.content_hash) for r in batch}
        await _io(s.meta.mark_pending, docs)  # a crash from here on leaves a trace to redo
        # The four writes are independent: fan out, total = slowest write.
        _, _, _, blob_keys = await asyncio.gather(
            self._timed("vectors", _replace, s.vectors, ids, chunks, vectors),
            self._timed("keywords", _replace, s.keywords, ids, chunks, {d.doc_id: d.title for d in docs}),
            self._timed("graph", _replace, s.graph, ids, chunks),
            self._timed("blobs", self._put_blobs, files),
        )
        await self._timed("meta", s.meta.commit, docs, chunks, {d.doc_id: blob_keys[d.source] for d in docs})

    async def _timed(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """One store's write, in a thread; its seconds add up per store over the run."""
        t = time.perf_counter()
        try:
            return await _io(fn, *args)
        finally:
            st = self.stages.write_stores
            st[name] = st.get(name, 0.0) + time.perf_counter() - t

    def _put_blobs(self, files: dict[str, tuple[str, str]]) -> dict[str, str]:
        """The original file of each source, stored once per content (a JSONL file spans many batches)."""
        keys = {}
        for uri, (path, digest) in files.items():
            if (uri, digest) not in self._blob_keys:
                try:
                    self._blob_keys[uri, digest] = self.stores.blobs.put_file(path)
                except FileNotFoundError:  # vanished after it was read: the chunks are still good
                    self._blob_keys[uri, digest] = ""
            keys[uri] = self._blob_keys[uri, digest]
        return keys

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
            path = _path_of(rec.uri)
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
    ``record_done``, ``prune``) overwrites the mark."""
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
    return meta.delete_documents(doc_ids)


def _replace(store: Any, ids: list[str], chunks: list[Chunk], *extra: Any) -> None:
    """Delete then write, inside one store: re-ingesting replaces a document's chunks, never adds to them."""
    store.delete_documents(ids)
    if chunks:
        store.add(chunks, *extra)


async def _io(fn: Callable[..., T], *args: Any) -> T:
    """Store calls leave the event loop: a server store's round trip (or outage) must not stall the stages."""
    return await asyncio.to_thread(fn, *args)


def _path_of(uri: str) -> Path | None:
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else None

