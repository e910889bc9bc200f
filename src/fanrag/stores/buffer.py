"""Write buffering for a vector store: vector writes go to a Redis stream, and are flushed to the real
store in large, controlled batches (by size or age) by one flusher at a time.

Why: many ingestion workers each writing small batches straight into one vector index (pgvector,
a managed vector DB) hit its write ceiling: every small write is a transaction, an index update and a
round trip. With a buffer, workers append to Redis (cheap, O(1)), and the index sees one big upsert
per ``flush_batch`` vectors.

    FANRAG_VECTORS=pgvector://…  FANRAG_VECTOR_BUFFER=redis://127.0.0.1:6379/0?key=fanrag:vbuf

The stream is an ordered operation log::

    XADD <key> op=add ids=[chunk ids] docs=[doc ids] vec=<float32 bytes>      add(chunks, vectors)
    XADD <key> op=del docs=[doc ids]                                          delete_documents(doc_ids)

A flush (under a Redis lock, ``SET <key>:lock NX PX``: one flusher among all workers) reads the oldest
entries, applies them to the inner store in order, and only then XDELs them. The inner store's writes
are idempotent (upsert by chunk id, delete by document), so a crash anywhere between buffer and flush
loses nothing: entries not yet deleted are applied again by the next flush. Run Redis with AOF
(``appendfsync everysec`` or ``always``) so the buffer itself survives a Redis restart.

Visibility: a buffered vector is searchable after its flush, at most ``flush_age_s`` later (plus a flush's
duration) while writers are active, and at once after ``flush()`` (the pipeline calls it at the end of
every run). BM25 and the metadata store are not buffered, so a just-committed document can be found by
keywords before it is found by dense search; it is never returned before its document is committed
(results are resolved through the metadata store, which only knows committed chunks).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from ..errors import ConfigError, StoreError, require
from ..types import Chunk
from .base import Allowed, ScoredId, VectorStore
from .factory import BUFFER_FIELD as FIELD

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BufferConfig:
    url: str  # the Redis connection URL without fanrag's own parameters
    key: str = "fanrag:vbuf"
    flush_batch: int = 4096  # vectors per flush (one inner add)
    flush_age_s: float = 2.0  # the oldest buffered write waits at most this long
    lock_ttl_s: float = 60.0  # a crashed flusher's lock expires after this

    @classmethod
    def from_url(cls, url: str, default_key: str = "") -> BufferConfig:
        """``default_key``: the stream key when the URL names none (one per index: see open_stores)."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(FIELD, f"{url!r}: need a redis:// URL")
        query = dict(parse_qsl(parts.query))
        own = {k: query.pop(k) for k in ("key", "flush_batch", "flush_age", "lock_ttl") if k in query}
        kw: dict[str, Any] = {}
        try:
            if "key" in own or default_key:
                kw["key"] = own.get("key", default_key)
            if "flush_batch" in own:
                kw["flush_batch"] = int(own["flush_batch"])
            for name, field_name in (("flush_age", "flush_age_s"), ("lock_ttl", "lock_ttl_s")):
                if name in own:
                    kw[field_name] = float(own[name])
        except ValueError as exc:
            raise ConfigError(FIELD, f"{url!r}: {exc}") from exc
        cfg = cls(url=urlunsplit(parts._replace(query=urlencode(query))), **kw)
        if cfg.flush_batch < 1 or cfg.flush_age_s <= 0 or cfg.lock_ttl_s <= 0 or not cfg.key:
            raise ConfigError(FIELD, f"{url!r}: need flush_batch >= 1, flush_age > 0, lock_ttl > 0, a key")
        return cfg


@dataclass
class _Ops:
    """Operations read from the stream, coalesced: deletes commute with adds of other documents, so
    ``del A, add A', del B, add B'`` (what re-ingesting batches writes) becomes ``del A B, add A' B'``."""

    dels: set[str]
    ids: list[str]
    docs: list[str]
    vecs: list[np.ndarray]

    @classmethod
    def empty(cls) -> _Ops:
        return cls(set(), [], [], [])

    def conflicts(self, doc_ids: Iterable[str]) -> bool:
        return bool(self.docs) and not set(self.docs).isdisjoint(doc_ids)


class BufferedVectorStore:
    """A VectorStore whose writes go through a Redis buffer; reads go to the inner store."""

    @classmethod
    def wrap(cls, inner: VectorStore, url: str, default_key: str) -> BufferedVectorStore:
        """``inner`` behind the buffer ``stores.vector_buffer = url`` names (what ``open_stores`` calls)."""
        return cls(inner, BufferConfig.from_url(url, default_key))

    def __init__(self, inner: VectorStore, config: BufferConfig, *, background: bool = True) -> None:
        redis = require("redis", feature="the vector write buffer", extra="redis")
        self.inner = inner
        self.config = config
        self.dim = inner.dim
        self._redis = redis.Redis.from_url(config.url)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError,)
        self._lock_key = f"{config.key}:lock"
        self._count_key = f"{config.key}:vectors"  # vectors buffered (XLEN counts operations)
        self._stop = threading.Event()
        self._wake = threading.Event()  # a write found a flush due: the background thread does it
        self._flushes = 0
        self._thread: threading.Thread | None = None
        if background:  # age-based flushes also happen when this process has stopped writing
            self._thread = threading.Thread(target=self._age_loop, name="fanrag-vbuf", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------ VectorStore: reads

    @property
    def n_shards(self) -> int:
        return self.inner.n_shards

    def search_shard(self, shard: int, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        return self.inner.search_shard(shard, query, k, allowed)

    def search(self, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        return self.inner.search(query, k, allowed)

    def count(self) -> int:
        """Vectors in the inner store (buffered ones are not counted until flushed)."""
        return self.inner.count()

    # ------------------------------------------------------------------ VectorStore: writes

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(chunks), self.dim):
            raise StoreError(f"vector buffer: expected shape ({len(chunks)}, {self.dim}), got {vectors.shape}")
        if not chunks:
            return
        n = len(chunks)
        first, total, now = self._append({"op": "add", "ids": json.dumps([c.chunk_id for c in chunks]),
                                          "docs": json.dumps([c.doc_id for c in chunks]), "vec": vectors.tobytes()}, n)
        if self._is_due(first, total, now):
            if self._thread is not None:
                self._wake.set()  # the writer goes on; appending stays one round trip
            else:
                self._flush_quietly()

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        """Buffered like an add, so it stays in order with them; returns 0 (the count is known at flush)."""
        ids = sorted(set(doc_ids))
        if ids:
            self._append({"op": "del", "docs": json.dumps(ids)}, 0)
        return 0

    def flush(self) -> None:
        """Apply every entry buffered so far, by anyone (later writes by other workers do not hold it up);
        a StoreError if that does not happen within twice the lock's lifetime."""
        last = self._call("XREVRANGE", self._redis.xrevrange, self.config.key, "+", "-", 1)
        mark = _entry_id(last[0][0]) if last else None
        deadline = time.monotonic() + 2 * self.config.lock_ttl_s
        while mark is not None:
            first = self._call("XRANGE", self._redis.xrange, self.config.key, "-", "+", 1)
            if not first or _entry_id(first[0][0]) > mark:
                break
            if time.monotonic() > deadline:
                raise StoreError(f"vector buffer {self.config.key!r}: entries up to {mark} still not applied "
                                 f"after {2 * self.config.lock_ttl_s:.0f} s (is another flusher stuck?)")
            if not self.flush_once(force=True):
                time.sleep(0.05)  # another process is flushing
        self.inner.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if not getattr(self.inner, "read_only", False):
                self.flush()
        finally:
            self.inner.close()
            self._redis.close()

    # ------------------------------------------------------------------ buffer

    def pending(self) -> int:
        """Operations buffered and not yet applied."""
        return int(self._call("XLEN", self._redis.xlen, self.config.key))

    @property
    def flushes(self) -> int:
        """Flushes this process applied (for tests and benchmarks)."""
        return self._flushes

    def _append(self, fields: dict[str, Any], n_vectors: int) -> tuple[Any, int, tuple[int, int]]:
        """XADD and the buffered-vector counter in one transaction, which also returns what decides a
        flush (the oldest entry, the count, the server's clock): one round trip per write."""
        pipe = self._redis.pipeline(transaction=True)
        pipe.xadd(self.config.key, fields)
        pipe.incrby(self._count_key, n_vectors)
        pipe.xrange(self.config.key, "-", "+", 1)
        pipe.time()
        _, total, first, now = self._call("XADD", pipe.execute)
        return first, int(total), now

    def _maybe_flush(self) -> None:
        if self._due():
            self.flush_once()

    def _flush_quietly(self) -> None:
        """An opportunistic flush: the write that triggered it is already safe in Redis, so a failing inner
        store must not fail (and make the caller repeat) that write; flush() and the next try report it."""
        try:
            self.flush_once()
        except StoreError as exc:
            log.warning("vector buffer: flush failed, will retry: %s", exc)

    def _due(self) -> bool:
        pipe = self._redis.pipeline(transaction=False)
        pipe.xrange(self.config.key, "-", "+", 1)
        pipe.get(self._count_key)
        pipe.time()
        first, total, now = self._call("XRANGE", pipe.execute)
        return self._is_due(first, int(total or 0), now)

    def _is_due(self, first: Any, total: int, now: tuple[int, int]) -> bool:
        """Enough vectors buffered, or the oldest entry (its id is the server's time in ms) old enough."""
        if not first:
            return False
        age_s = now[0] + now[1] / 1e6 - int(first[0][0].split(b"-")[0]) / 1000
        return total >= self.config.flush_batch or age_s >= self.config.flush_age_s

    def flush_once(self, force: bool = False) -> bool:
        """Apply up to ``flush_batch`` buffered vectors if this process gets the lock; False if it did not."""
        token = uuid.uuid4().hex
        got = self._call("SET", self._redis.set, self._lock_key, token, nx=True,
                         px=int(self.config.lock_ttl_s * 1000))
        if not got:
            return False
        try:
            if force or self._due():
                self._apply_batch(token)
        finally:
            # Release only our own lock (it may have expired and been taken by another flusher).
            self._call("EVAL", self._redis.eval, _RELEASE, 1, self._lock_key, token)
        return True

    def _apply_batch(self, token: str) -> None:
        entries = self._read_batch()
        if not entries:
            return
        ops = _Ops.empty()
        for _, fields in entries:
            ops = self._fold(ops, fields, token)
        self._apply(ops, token)
        # Only now are the entries removed: a crash before this line re-applies them (idempotent).
        self._remove(entries, token)
        self._flushes += 1

    def _remove(self, entries: list[tuple[bytes, dict[bytes, bytes]]], token: str) -> None:
        """Drop applied entries and their vectors from the count, atomically, if we still hold the lock."""
        applied = sum(len(f.get(b"vec", b"")) // (4 * self.dim) for _, f in entries)
        ok = self._call("EVAL", self._redis.eval, _REMOVE, 3, self._lock_key, self.config.key, self._count_key,
                        token, applied, *[eid for eid, _ in entries])
        if not ok:
            raise StoreError(f"vector buffer {self.config.key!r}: lost the flush lock while applying (a flush "
                             "took longer than lock_ttl); the entries stay for the next flush")

    def _renew(self, token: str) -> None:
        """Extend our flush lock before each write to the inner store; stop if another flusher has it: two
        flushers applying the same entries out of order could bring back deleted vectors."""
        if not self._call("EVAL", self._redis.eval, _RENEW, 1, self._lock_key, token,
                          int(self.config.lock_ttl_s * 1000)):
            raise StoreError(f"vector buffer {self.config.key!r}: lost the flush lock (a flush took longer "
                             "than lock_ttl); the entries stay for the next flush")

    def _read_batch(self) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The oldest entries holding up to ``flush_batch`` vectors (at least one entry)."""
        out: list[tuple[bytes, dict[bytes, bytes]]] = []
        vectors = 0
        for eid, fields in self._call("XRANGE", self._redis.xrange, self.config.key, "-", "+",
                                      self.config.flush_batch):
            n = len(fields.get(b"vec", b"")) // (4 * self.dim)
            if out and vectors + n > self.config.flush_batch:
                break
            out.append((eid, fields))
            vectors += n
        return out

    def _fold(self, ops: _Ops, fields: dict[bytes, bytes], token: str) -> _Ops:
        docs = json.loads(fields[b"docs"])
        if fields[b"op"] == b"del":
            if ops.conflicts(docs):  # an add of these documents came first: it must land before the delete
                self._apply(ops, token)
                ops = _Ops.empty()
            ops.dels.update(docs)
            return ops
        ops.ids.extend(json.loads(fields[b"ids"]))
        ops.docs.extend(docs)
        ops.vecs.append(np.frombuffer(fields[b"vec"], dtype=np.float32).reshape(len(docs), self.dim))
        return ops

    def _apply(self, ops: _Ops, token: str) -> None:
        self._renew(token)
        if ops.dels:
            self.inner.delete_documents(sorted(ops.dels))
        if ops.ids:  # a chunk id written twice: the inner store keeps the last (the VectorStore contract)
            chunks = [Chunk(chunk_id=cid, doc_id=doc, position=0, text="", char_start=0, char_end=0)
                      for cid, doc in zip(ops.ids, ops.docs, strict=True)]
            self.inner.add(chunks, np.concatenate(ops.vecs))

    def _age_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_age_s / 2)  # a write found a flush due, or time to look
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self._maybe_flush()
            except Exception as exc:  # noqa: BLE001 - the writer's own flush reports errors; keep trying
                log.warning("vector buffer: background flush failed: %s", exc)

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except self._errors as exc:
            raise StoreError(f"vector buffer: redis {what} on {self.config.key!r}: {exc}") from exc


def _entry_id(eid: bytes) -> tuple[int, int]:
    ms, _, seq = eid.partition(b"-")
    return int(ms), int(seq or 0)


_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_REMOVE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XDEL', KEYS[2], unpack(ARGV, 3))
redis.call('DECRBY', KEYS[3], ARGV[2])
return 1
"""
