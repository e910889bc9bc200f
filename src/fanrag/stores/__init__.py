"""Open every store of an index home at once: ``open_stores(settings, mode="write", dim=384)``.

Each store kind is served by the backend its URL in ``settings.stores`` names (empty = the embedded
default under ``settings.home``). Backends register a factory per (kind, URL scheme) with
``register_backend``; factories import their modules only when called, so an unused backend's
packages are never imported.

Layout of an embedded home::

    LOCK            fcntl lock held by the one writer process
    meta.sqlite     SqliteMetaStore
    vectors/        ShardedHnswStore (meta.json records the vector dim)
    bm25/           TantivyKeywordStore
    blobs/          FileBlobStore
    graph.sqlite    SqliteGraphStore
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from ..errors import ConfigError, IndexLocked, StoreError
from ..settings import Settings
from .base import (
    BlobStore,
    DocumentRecord,
    GraphStore,
    KeywordStore,
    MetaStore,
    ScoredId,
    SourceRecord,
    VectorStore,
)

__all__ = [
    "BlobStore", "DocumentRecord", "GraphStore", "KeywordStore", "MetaStore", "OpenContext", "ScoredId",
    "SourceRecord", "StoreSet", "VectorStore", "open_reader", "open_stores", "register_backend",
]

KINDS = ("meta", "vectors", "keywords", "blobs", "graph")


@dataclass(frozen=True)
class OpenContext:
    """What a backend factory gets besides its URL."""

    settings: Settings
    read_only: bool
    dim: int | None  # vectors only: the embedder's dim (None: a reader takes what the index records)
    model: str = ""  # the embedder's name, recorded with the dim so a mismatch can say which model built it


Factory = Callable[[str, OpenContext], Any]
_BACKENDS: dict[tuple[str, str], Factory] = {}


def register_backend(kind: str, scheme: str, factory: Factory) -> None:
    """Serve store ``kind`` for URLs with this scheme ("" = the embedded default)."""
    if kind not in KINDS:
        raise ValueError(f"unknown store kind {kind!r}; known: {KINDS}")
    _BACKENDS[(kind, scheme)] = factory


def _embedded_meta(url: str, ctx: OpenContext) -> MetaStore:
    from .meta_sqlite import SqliteMetaStore

    return SqliteMetaStore(ctx.settings.home / "meta.sqlite", read_only=ctx.read_only)


def _embedded_vectors(url: str, ctx: OpenContext) -> VectorStore:
    from .vectors_hnsw import ShardedHnswStore

    v = ctx.settings.hnsw
    return ShardedHnswStore(ctx.settings.home / "vectors", ctx.dim, shards=v.shards, m=v.m,
                            ef_construction=v.ef_construction, ef_search=v.ef_search,
                            checkpoint_every=v.checkpoint_every, read_only=ctx.read_only, model=ctx.model)


def _embedded_keywords(url: str, ctx: OpenContext) -> KeywordStore:
    from .keywords_tantivy import TantivyKeywordStore

    return TantivyKeywordStore(ctx.settings.home / "bm25", read_only=ctx.read_only)


def _embedded_blobs(url: str, ctx: OpenContext) -> BlobStore:
    from .blobs_files import FileBlobStore

    return FileBlobStore(ctx.settings.home / "blobs", read_only=ctx.read_only)


def _embedded_graph(url: str, ctx: OpenContext) -> GraphStore:
    from .graph_sqlite import SqliteGraphStore

    return SqliteGraphStore(ctx.settings.home / "graph.sqlite", read_only=ctx.read_only)


register_backend("meta", "", _embedded_meta)
register_backend("vectors", "", _embedded_vectors)
register_backend("keywords", "", _embedded_keywords)
register_backend("blobs", "", _embedded_blobs)
register_backend("graph", "", _embedded_graph)


def _postgres_meta(url: str, ctx: OpenContext) -> MetaStore:
    from .meta_postgres import PostgresMetaStore

    return PostgresMetaStore(url, read_only=ctx.read_only)


def _pgvector_vectors(url: str, ctx: OpenContext) -> VectorStore:
    from .vectors_pgvector import PgVectorStore

    v = ctx.settings.hnsw
    return PgVectorStore(url, ctx.dim, shards=v.shards, m=v.m, ef_construction=v.ef_construction,
                         ef_search=v.ef_search, read_only=ctx.read_only, model=ctx.model)


def _postgres_keywords(url: str, ctx: OpenContext) -> KeywordStore:
    from .keywords_postgres import PgKeywordStore

    return PgKeywordStore(url, read_only=ctx.read_only)


register_backend("keywords", "postgresql", _postgres_keywords)
register_backend("keywords", "postgres", _postgres_keywords)
register_backend("meta", "postgresql", _postgres_meta)
register_backend("meta", "postgres", _postgres_meta)
register_backend("vectors", "pgvector", _pgvector_vectors)


def _s3_blobs(url: str, ctx: OpenContext) -> BlobStore:
    from .blobs_s3 import S3BlobStore

    return S3BlobStore(url, read_only=ctx.read_only)


def _falkordb_graph(url: str, ctx: OpenContext) -> GraphStore:
    from .graph_falkordb import FalkorGraphStore

    return FalkorGraphStore(url, read_only=ctx.read_only)


register_backend("blobs", "s3", _s3_blobs)
register_backend("graph", "falkordb", _falkordb_graph)


class WriterLock:
    """``fcntl.flock`` on ``home/LOCK``: one writer process per home. Released by close() or process exit."""

    def __init__(self, home: Path) -> None:
        self.path = home / "LOCK"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise IndexLocked(f"{home} is being written by another process (pid {holder}); wait for it to "
                              "finish, or open it read-only to query") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, str(os.getpid()).encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = -1


@dataclass
class StoreSet:
    """The five stores of one home. Close it (or use ``with``) to checkpoint vectors and release the lock."""

    meta: MetaStore
    vectors: VectorStore
    keywords: KeywordStore
    blobs: BlobStore
    graph: GraphStore
    mode: str = "write"
    _lock: WriterLock | None = field(default=None, repr=False)

    def flush(self) -> None:
        self.vectors.flush()

    def close(self) -> None:
        """Close every store (vectors last but one: its close() writes a checkpoint), then unlock."""
        try:
            for store in (self.graph, self.blobs, self.keywords, self.vectors, self.meta):
                store.close()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _factory(kind: str, url: str) -> Factory:
    scheme = urlsplit(url).scheme if url else ""
    try:
        return _BACKENDS[(kind, scheme)]
    except KeyError:
        known = sorted(s or "(empty: embedded)" for k, s in _BACKENDS if k == kind)
        raise ConfigError(f"stores.{kind}", f"no backend for URL scheme {scheme!r}; known: {known}") from None


def open_reader(settings: Settings, kind: str) -> Any:
    """One store of a home on its own, read-only and without the writer lock: e.g. a Celery worker that
    looks up committed sources in the metadata store while another process writes."""
    if kind not in KINDS:
        raise ValueError(f"unknown store kind {kind!r}; known: {KINDS}")
    url = getattr(settings.stores, kind)
    return _factory(kind, url)(url, OpenContext(settings=settings, read_only=True, dim=None))


def open_stores(settings: Settings, mode: str = "write", dim: int | None = None, model: str = "") -> StoreSet:
    """Open all stores of ``settings.home``.

    ``mode="write"`` takes the home's writer lock (a second writer gets IndexLocked) and needs ``dim``
    the first time; ``mode="read"`` takes no lock and sees what writers have committed. ``dim`` is
    checked against the dim the index was built with: a different embedding model is a StoreError.
    """
    if mode not in ("write", "read"):
        raise ValueError(f"mode must be 'write' or 'read', not {mode!r}")
    home = settings.home
    factories = {kind: _factory(kind, getattr(settings.stores, kind)) for kind in KINDS}
    lock = None
    if mode == "write":
        home.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(home)
    elif not home.is_dir():
        raise StoreError(f"{home}: no index here (run `fanrag ingest` first)")
    ctx = OpenContext(settings=settings, read_only=mode == "read", dim=dim, model=model)
    opened: dict[str, Any] = {}
    try:
        for kind in KINDS:
            opened[kind] = factories[kind](getattr(settings.stores, kind), ctx)
        if settings.stores.vector_buffer and mode == "write":  # readers read the vector store itself
            from .buffer import BufferConfig, BufferedVectorStore

            # Without ?key=, one stream per vector store: two indexes sharing a Redis never mix their writes.
            target = settings.stores.vectors or str(home.resolve())
            default_key = "fanrag:vbuf:" + hashlib.sha1(target.encode()).hexdigest()[:16]
            opened["vectors"] = BufferedVectorStore(
                opened["vectors"], BufferConfig.from_url(settings.stores.vector_buffer, default_key))
    except BaseException:
        for store in opened.values():
            store.close()
        if lock is not None:
            lock.release()
        raise
    return StoreSet(mode=mode, _lock=lock, **opened)
