"""One Protocol per store kind. Embedded backends live beside this file; server backends (PostgreSQL,
pgvector, S3, FalkorDB) implement the same protocols and pass the same contract tests.

Write methods are synchronous and thread-safe for one writer: the pipeline runs the four writes of a
batch concurrently with ``asyncio.to_thread`` (embedded backends release the GIL in their native code),
so a batch costs the slowest write, not the sum. Every write is idempotent: writing the same chunk id
twice leaves one copy, and ``delete_documents`` of an absent id is a no-op. That plus "delete, then
write, then commit in the metadata store" is what makes ingestion resumable after SIGKILL.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import numpy as np

from ..types import Chunk, Document

if TYPE_CHECKING:
    from ..filters import Filter


# The documents a filtered search may return (``fanrag.filters``): a frozenset, so that a store may key a
# cache on it (hashed once) while one query searches several shards and sub-queries with it.
Allowed: TypeAlias = frozenset[str]


@dataclass(frozen=True, slots=True)
class ScoredId:
    chunk_id: str
    score: float


@runtime_checkable
class VectorStore(Protocol):
    """Nearest-neighbour search over chunk embeddings, split into ``n_shards`` shards."""

    dim: int

    @property
    def n_shards(self) -> int: ...

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Insert or replace vectors (float32, L2-normalised, shape (len(chunks), dim)); durable on return."""

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Remove every vector of these documents; returns how many were removed."""

    def search_shard(self, shard: int, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        """Local top-k of one shard, best first; score = cosine similarity. With ``allowed`` (doc ids),
        the top-k among those documents' vectors only."""

    def search(self, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        """Global top-k: every shard's local top-k merged by score."""

    def count(self) -> int: ...

    def flush(self) -> None:
        """Checkpoint in-memory state (cheap to call often; a no-op for server stores)."""

    def close(self) -> None: ...


@runtime_checkable
class KeywordStore(Protocol):
    """BM25 over chunk text."""

    def add(self, chunks: Sequence[Chunk], titles: dict[str, str] | None = None) -> None:
        """Index chunks (replacing same ids); ``titles`` maps doc_id -> title, indexed with each chunk."""

    def delete_documents(self, doc_ids: Iterable[str]) -> int: ...

    def search(self, query: str, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        """BM25 top-k, best first; with ``allowed`` (doc ids), among those documents' chunks only."""

    def count(self) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """Raw source bytes, content-addressed: ``put`` returns the key, the same bytes give the same key."""

    def put(self, data: bytes) -> str: ...

    def put_file(self, path: str) -> str: ...

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class GraphStore(Protocol):
    """Entities, their mentions in chunks (chunk <-> entity) and co-occurrence (entity <-> entity)."""

    def add(self, chunks: Sequence[Chunk]) -> None:
        """Record ``chunk.entities`` for each chunk, and co-occurrence of entities within a chunk."""

    def delete_documents(self, doc_ids: Iterable[str]) -> int: ...

    def chunks_for_entities(self, names: Sequence[str], k: int, hops: int = 1,
                            allowed: Allowed | None = None) -> list[ScoredId]:
        """Chunks that mention these entities, then (hops=1) chunks that mention their co-occurring
        neighbours, scored by how many (and how specific) the matched entities are. With ``allowed``
        (doc ids), only those documents' chunks are ranked (scores as without it)."""

    def known_entities(self, names: Sequence[str]) -> list[str]:
        """The subset of normalised names that the graph holds."""

    def stats(self) -> dict[str, int]: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DocumentRecord:
    doc_id: str
    uri: str
    source: str
    content_hash: str
    status: str  # pending | committed | failed
    title: str = ""
    n_pages: int = 0
    n_chunks: int = 0
    blob_key: str = ""
    error: str = ""
    metadata: dict[str, Any] | None = None
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class SourceRecord:
    uri: str
    content_hash: str
    size: int
    mtime: float
    status: str  # committed | failed | pending
    error: str = ""
    n_documents: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class CachedVector:
    """One entry of the embedding cache (``embed/cache.py``): the vector bytes an embedder gave for a text
    (by the text's hash), owned by the document that first wrote it."""

    text_hash: bytes
    doc_id: str
    vector: bytes


def stale_cache_keys(owned: Iterable[tuple[str, bytes, str]], model: str,
                     keep: Mapping[str, Collection[bytes]]) -> list[tuple[str, bytes]]:
    """The (model, text hash) keys to evict among ``owned`` (model, text hash, owner) entries: those whose
    owner, being rewritten, no longer holds the text (``keep``: its texts' hashes), or holds it under
    another ``model``. What both metadata stores evict when a document is written."""
    return [(m, h) for m, h, doc in owned if m != model or h not in keep.get(doc, ())]


@runtime_checkable
class MetaStore(Protocol):
    """Source of truth: what is committed. Chunks become visible to queries only through ``commit``."""

    # sources (files; one source may hold many documents)
    def get_source(self, uri: str) -> SourceRecord | None: ...

    def sources(self) -> list[SourceRecord]: ...

    def put_source(self, record: SourceRecord) -> None: ...

    def delete_source(self, uri: str) -> None: ...

    # documents
    def document_hashes(self, source: str) -> dict[str, str]:
        """doc_id -> content_hash of the committed documents of one source."""

    def mark_pending(self, docs: Sequence[Document]) -> None:
        """Record that these documents are being written (so a crash leaves a trace to clean up)."""

    def commit(self, docs: Sequence[Document], chunks: Sequence[Chunk], blob_keys: dict[str, str]) -> None:
        """Atomically replace each document's chunks and mark it committed."""

    def mark_failed(self, uri: str, source: str, reason: str) -> None: ...

    def stale_pending(self) -> list[str]:
        """Ids of the pending documents no live writer will commit (left by a crash): a writer removes
        them from every store before its run writes anything. Only a writer calls it."""

    def get_document(self, doc_id: str) -> DocumentRecord | None: ...

    def documents(self, status: str | None = None, source: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[DocumentRecord]: ...

    def delete_documents(self, doc_ids: Iterable[str]) -> int: ...

    def doc_ids_by_external(self, external_ids: Sequence[str]) -> dict[str, str]:
        """external id (e.g. BEIR ``_id``) -> doc_id."""

    # chunks
    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """Committed chunks by id; ids that are not committed are absent."""

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> list[str]: ...

    def filter_documents(self, flt: Filter) -> list[str]:
        """Ids of the committed documents that ``flt`` matches (``fanrag.filters``: one SQL query)."""

    def tag_documents(self, sources: Sequence[str], tags: Mapping[str, Any]) -> int:
        """Set ``tags`` (key -> JSON scalar) as top-level metadata of the committed documents of these
        sources (``fanrag ingest --tag``); returns how many documents were tagged."""

    # the embedding cache: vectors by (embedder, text hash), each entry owned by a document
    def cached_vectors(self, model: str, text_hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        """text hash -> vector bytes of the entries ``model`` wrote; a hash that is absent is a miss."""

    def cache_vectors(self, model: str, entries: Sequence[CachedVector],
                      keep: Mapping[str, Collection[bytes]]) -> None:
        """Add ``entries`` (an entry already there stays as it is), and evict the entries owned by each
        document in ``keep`` whose text it no longer holds (``keep[doc_id]``: its texts' hashes), or
        holds under another model, in one transaction."""

    def evict_cached_vectors(self, doc_ids: Sequence[str]) -> int:
        """Remove every entry these documents own (they are being deleted); returns how many."""

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...
