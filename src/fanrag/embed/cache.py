"""The embedding cache: a chunk whose exact text was embedded before is not embedded again, so re-ingesting a
changed document costs the chunks that changed.

    key      (identity, text hash). ``identity`` is what changes the vector: the embedder's name as the index
             records it (runtime + precision + model, ``onnx-int8/all-MiniLM-L6-v2``), its dimension and
             ``embed.max_length``; the text hash is BLAKE2b-128 of exactly what is embedded
             (``Chunk.indexed_text``: the header, then the text), so a chunk whose header changed (another
             section title, another page) is embedded again
    value    the float32 bytes the vector store receives (L2-normalised), so a hit is the very vector a
             fresh embed gives (at ``embed.batch_size`` 1, the int8 default; see ``ingest/executors/base``)
    where    the index's metadata store (``MetaStore.cached_vectors`` / ``cache_vectors``): embedded SQLite
             or PostgreSQL, shared by every writer of a server index

The embed stage looks a whole batch up in one call (never one round trip per chunk), embeds only the misses,
each distinct text once, and remembers their hashes; the writer stores those entries with the document's
write (beside the index writes, before the metadata commit). A writer that did not see the embedding (a
Celery writer: its workers embed in other processes) offers every chunk's entry (``store_all``), and those
already there stay as they are. A cache entry is never wrong, only present or
absent, so none of this touches crash safety: a crash leaves at most entries that a later run would have
written anyway, and the sweep of the pending documents evicts them.

Bound: an entry is owned by the document that first wrote it, and leaves when that document does (delete,
prune, sweep: ``ingest.writer.delete_everywhere``) or when it is written again without that text (or with
another embedder). So the cache holds at most one entry per distinct chunk text of the documents in the
index: it grows with the index, never with the number of edits. A text shared by two documents is owned by
one; when its owner goes, the other's next re-ingest embeds it again and owns it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable, Sequence

import numpy as np

from ..stores.base import CachedVector, MetaStore
from .base import Embedder

_F32 = np.dtype("<f4")  # the stored byte order, whatever the machine's


def text_key(text: str) -> bytes:
    """The cache key of one embedded text: 16 bytes of BLAKE2b over its UTF-8 (lone surrogates kept)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def identity(embedder: Embedder, max_length: int) -> str:
    """What a cached vector was made with: another name, dimension or input length never shares entries."""
    return f"{embedder.name}|{embedder.dim}d|max{max_length}"


class EmbedCache:
    """One run's view of the cache: ``embed`` for the embed stage, ``store`` for the writer."""

    def __init__(self, meta: MetaStore, identity: str, dim: int, *, store_all: bool = False) -> None:
        self.meta = meta
        self.identity = identity
        self.dim = dim
        self.store_all = store_all  # store every chunk's entry, not only what this object embedded
        self.hits = 0  # texts served from the cache this run
        self.embedded = 0  # distinct texts sent to the embedder this run
        self._fresh: set[bytes] = set()  # hashes embedded this run, not yet stored by the writer

    async def embed(self, texts: Sequence[str],
                    embed: Callable[[list[str]], Awaitable[np.ndarray]]) -> np.ndarray:
        """The vectors of ``texts``, rows in order: cached rows from the store, the rest from ``embed``."""
        keys = [text_key(t) for t in texts]
        found = await asyncio.to_thread(self.meta.cached_vectors, self.identity, keys)
        rows = {k: v for k, v in map(self._decode, found.items()) if v is not None}
        misses = {k: t for k, t in zip(keys, texts, strict=True) if k not in rows}
        if misses:
            vectors = await embed(list(misses.values()))
            rows.update(zip(misses, vectors, strict=True))
            self._fresh.update(misses)
        self.hits += len(keys) - sum(k in misses for k in keys)
        self.embedded += len(misses)
        return np.stack([rows[k] for k in keys]).astype(np.float32, copy=False) if keys else _empty(self.dim)

    def _decode(self, item: tuple[bytes, bytes]) -> tuple[bytes, np.ndarray | None]:
        """A stored row as a vector; one of another size (a damaged row) is a miss, never a wrong vector."""
        key, raw = item
        ok = len(raw) == self.dim * _F32.itemsize
        return key, np.frombuffer(raw, _F32).astype(np.float32) if ok else None

    def store(self, docs: Sequence[tuple[str, Sequence[str], np.ndarray]]) -> None:
        """Write what this run embedded for these documents ((doc_id, indexed texts, vectors) each), and
        evict the entries they own whose text they no longer hold."""
        keep: dict[str, set[bytes]] = {}
        entries: dict[bytes, CachedVector] = {}
        for doc_id, texts, vectors in docs:
            keys = [text_key(t) for t in texts]
            keep[doc_id] = set(keys)
            for key, row in zip(keys, vectors, strict=True):
                if (self.store_all or key in self._fresh) and key not in entries:
                    entries[key] = CachedVector(key, doc_id, row.astype(_F32).tobytes())
        self.meta.cache_vectors(self.identity, list(entries.values()), keep)
        self._fresh.difference_update(entries)


def _empty(dim: int) -> np.ndarray:
    return np.zeros((0, dim), np.float32)
