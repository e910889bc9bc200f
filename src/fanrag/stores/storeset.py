"""Open every store of an index home at once: ``open_stores(settings, mode="write", dim=384, model=name)``.

Each store kind is served by the backend its URL in ``settings.stores`` names (empty = the embedded
default under ``settings.home``; see ``factory``). A writer holds the home's lock (``lock``); readers
take none and see what writers have committed.

Layout of an embedded home::

    LOCK            fcntl lock held by the one writer process
    meta.sqlite     SqliteMetaStore
    vectors/        ShardedHnswStore (meta.json records the embedder: dim and model)
    bm25/           TantivyKeywordStore
    blobs/          FileBlobStore
    graph.sqlite    SqliteGraphStore
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Self

from ..errors import StoreError
from ..settings import Settings
from .base import BlobStore, GraphStore, KeywordStore, MetaStore, VectorStore
from .factory import KINDS, OpenContext, open_backend, opener, wrap_vector_buffer
from .lock import WriterLock

Mode = Literal["write", "read"]


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


def open_reader(settings: Settings, kind: str) -> Any:
    """One store of a home on its own, read-only and without the writer lock: e.g. a Celery worker that
    looks up committed sources in the metadata store while another process writes."""
    if kind not in KINDS:
        raise ValueError(f"unknown store kind {kind!r}; known: {KINDS}")
    return open_backend(kind, getattr(settings.stores, kind), OpenContext(settings=settings, read_only=True))


def open_stores(settings: Settings, mode: Mode = "write", dim: int | None = None, model: str = "") -> StoreSet:
    """Open all stores of ``settings.home``.

    ``mode="write"`` takes the home's writer lock (a second writer gets IndexLocked) and needs ``dim``
    the first time; ``mode="read"`` takes no lock and sees what writers have committed. In both modes
    ``dim`` and ``model`` (the embedder's) are checked against what the vector index was built with:
    another embedder is a StoreError naming both (``None``/``""``: not checked).
    """
    if mode not in ("write", "read"):
        raise ValueError(f"mode must be 'write' or 'read', not {mode!r}")
    home = settings.home
    urls = {kind: getattr(settings.stores, kind) for kind in KINDS}
    openers = {kind: opener(kind, url) for kind, url in urls.items()}  # unknown schemes fail before the lock
    lock = None
    if mode == "write":
        home.mkdir(parents=True, exist_ok=True)
        lock = WriterLock(home)
    elif not home.is_dir() and not all(urls.values()):
        # an embedded store lives in the home; an index whose stores are all servers needs no home to read
        raise StoreError(f"{home}: no index here (run `fanrag ingest` first)")
    ctx = OpenContext(settings=settings, read_only=mode == "read", dim=dim, model=model)
    opened: dict[str, Any] = {}
    try:
        for kind in KINDS:
            opened[kind] = openers[kind](urls[kind], ctx)
        if settings.stores.vector_buffer and mode == "write":  # readers read the vector store itself
            opened["vectors"] = wrap_vector_buffer(settings, opened["vectors"])
    except BaseException:
        for store in opened.values():
            store.close()
        if lock is not None:
            lock.release()
        raise
    return StoreSet(mode=mode, _lock=lock, **opened)
