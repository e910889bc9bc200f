"""Sharded hnswlib vector store, durable per batch without rewriting the graph per batch.

Layout under ``path`` (``home/vectors``)::

    meta.json        dim, shards, m, ef_construction, model: what the index was built with
    log.sqlite       log(seq, op, label, chunk_id, doc_id, delta, vector): every add/delete, one
                     transaction per call; live(label, chunk_id, doc_id): what is in the index now;
                     relabelled(chunk_id, label): the chunks whose label is not vector_label(chunk_id)
    shard-XX.bin     hnswlib graphs, saved by flush() (every ``checkpoint_every`` ops and on close)
    checkpoint.json  the last log seq the saved shards contain

``add`` returns once its log transaction is committed; a SIGKILL after that loses nothing, because open()
loads the shards and replays the log rows after the checkpoint. Replay is idempotent (re-adding a label
updates it, deleting an absent label is skipped), so a crash between saving shard files and writing
checkpoint.json is harmless. After a checkpoint the log rows it covers are deleted.

A reader process (``read_only``) sees a writer's new rows by ``refresh()``, which ``search`` calls: one
cheap query for the newest seq, then a replay of the rows it has not applied yet.

hnswlib keys vectors by integer label: ``vector_label(chunk_id)``, 63 bits of a hash. Two chunk ids can
share one (likely enough in a billion chunks), and the second would then silently replace the first's
vector. So a write never takes a label that another chunk holds: the newcomer probes
``vector_label(f"{chunk_id}#1")``, ``#2``, ... and the label it gets is recorded in ``relabelled``, in
the same transaction as the log, so that its re-adds and deletes find it. The shard is ``label % N``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import hnswlib
import numpy as np

from ..errors import StoreError
from ..ids import vector_label
from ..types import Chunk
from ._sqlite import SqliteDb, batched, marks, migrate
from .base import Allowed, ScoredId
from .identity import BuiltWith, check_embedder, should_record

if TYPE_CHECKING:
    from .factory import OpenContext

_ADD, _DELETE = 1, 2
# Filtered search (``_knn_among``): an exact scan when the filter leaves at most EXACT_MAX vectors of a
# shard (hnswlib's get_items copies ~30 us per vector); else a filtered graph search with ef up to MAX_EF.
EXACT_MAX = 64
MAX_EF = 4096
ALLOWED_CACHE = 8  # filters whose labels are kept (see _allowed_labels)
_INITIAL_CAPACITY = 1024

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, op INTEGER NOT NULL, label INTEGER NOT NULL,
        chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL, delta INTEGER NOT NULL, vector BLOB);
    CREATE TABLE live (label INTEGER PRIMARY KEY, chunk_id TEXT NOT NULL, doc_id TEXT NOT NULL);
    CREATE INDEX live_doc ON live(doc_id);
    CREATE TABLE state (key TEXT PRIMARY KEY, value INTEGER NOT NULL)
    """,
    "CREATE TABLE relabelled (chunk_id TEXT PRIMARY KEY, label INTEGER NOT NULL)",
)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def _select_in(conn: sqlite3.Connection, sql: str, values: Sequence[Any]) -> list[tuple[Any, ...]]:
    """``sql`` ending in ``IN`` run over ``values`` in parameter-sized parts."""
    rows: list[tuple[Any, ...]] = []
    for part in batched(values):
        rows += conn.execute(f"{sql} ({marks(len(part))})", part).fetchall()
    return rows


def read_index_meta(path: str | Path) -> dict[str, Any] | None:
    """The ``meta.json`` of a vector index directory, or None if nothing was built there yet."""
    meta = Path(path) / "meta.json"
    return json.loads(meta.read_text("utf-8")) if meta.is_file() else None


class ShardedHnswStore:
    """VectorStore on N hnswlib shards; label = vector_label(chunk_id) (unless taken), shard = label % N."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """The embedded default: ``home/vectors/``, tuned by ``settings.hnsw``, opened by ``open_stores``."""
        h = ctx.settings.hnsw
        return cls(ctx.settings.home / "vectors", ctx.dim, shards=h.shards, m=h.m, ef_construction=h.ef_construction,
                   ef_search=h.ef_search, checkpoint_every=h.checkpoint_every, read_only=ctx.read_only,
                   model=ctx.model)

    def __init__(self, path: str | Path, dim: int | None, shards: int = 2, m: int = 16,
                 ef_construction: int = 200, ef_search: int = 128, checkpoint_every: int = 50_000,
                 *, read_only: bool = False, model: str = "") -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._ef_search = ef_search
        self._checkpoint_every = checkpoint_every
        # _lock orders writes, refresh and flush; a shard's lock guards its hnswlib index, so searches of
        # different shards run in parallel and a search never sees a shard mid-resize.
        self._lock = threading.RLock()
        built = self._check_meta(dim, shards, m, ef_construction, model)
        self.dim: int = built["dim"]
        self._n = built["shards"]
        self._m, self._efc = built["m"], built["ef_construction"]
        self._db = SqliteDb(self.path / "log.sqlite", read_only=read_only)
        if not read_only:
            migrate(self._db, MIGRATIONS)
        self._shard_locks = [threading.Lock() for _ in range(self._n)]
        self._allowed_cache: dict[Allowed, tuple[int, list[np.ndarray]]] = {}
        self._allowed_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(self._n, thread_name_prefix="hnsw") if self._n > 1 else None
        # Rows replayed at open count as unsaved work, so the writer's next checkpoint covers them.
        replayed = self._load()
        self._since_checkpoint = 0 if read_only else replayed

    # opening ---------------------------------------------------------------------------------------------
    def _check_meta(self, dim: int | None, shards: int, m: int, efc: int, model: str) -> dict[str, Any]:
        """Use what the index was built with; refuse another embedder (see ``identity``)."""
        built = read_index_meta(self.path)
        if built is None:
            if self.read_only or dim is None:
                raise StoreError(f"{self.path}: no vector index here yet (ingest something first)")
            built = {"dim": int(dim), "shards": shards, "m": m, "ef_construction": efc, "space": "ip",
                     "model": model}
            self.path.mkdir(parents=True, exist_ok=True)
            self._write_meta(built)
        built_with = BuiltWith(built["dim"], built.get("model", ""))
        check_embedder(str(self.path), built_with, dim, model, remedy="re-ingest into a new home")
        if should_record(built_with, model, self.read_only):
            built = {**built, "model": model}
            self._write_meta(built)
        return built

    def _write_meta(self, built: dict[str, Any]) -> None:
        _atomic_write(self.path / "meta.json", json.dumps(built, indent=1).encode())

    def _new_shard(self, capacity: int = _INITIAL_CAPACITY) -> hnswlib.Index:
        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(max_elements=capacity, M=self._m, ef_construction=self._efc)
        index.set_ef(self._ef_search)
        return index

    def _shard_file(self, i: int) -> Path:
        return self.path / f"shard-{i:02d}.bin"

    def _load(self) -> int:
        """Load the checkpointed shards, then replay the log after the checkpoint; returns rows replayed."""
        with self._lock:
            checkpoint = self.path / "checkpoint.json"
            seq = json.loads(checkpoint.read_text("utf-8"))["seq"] if checkpoint.is_file() else 0
            self._shards = [self._load_shard(i) if seq else self._new_shard() for i in range(self._n)]
            self._applied = seq
            # Live counts per shard cap k in knn_query (hnswlib raises when it cannot return k results).
            self._live = [0] * self._n
            for shard, n in self._db.query("SELECT label % ?, count(*) FROM live GROUP BY 1", (self._n,)):
                self._live[shard] = n
            return self._replay()

    def _load_shard(self, i: int) -> hnswlib.Index:
        index = hnswlib.Index(space="ip", dim=self.dim)
        try:
            index.load_index(str(self._shard_file(i)))
        except RuntimeError as exc:
            raise StoreError(f"{self._shard_file(i)}: cannot load HNSW shard: {exc}") from exc
        index.set_ef(self._ef_search)
        return index

    def _replay(self, upto: int | None = None) -> int:
        """Apply log rows in (``_applied``, ``upto``] to the in-memory shards, in log order."""
        done = 0
        bound = "" if upto is None else f" AND seq <= {int(upto)}"
        while True:
            rows = self._db.query(f"SELECT seq, op, label, vector FROM log WHERE seq > ?{bound} "
                                  "ORDER BY seq LIMIT 10000", (self._applied,))
            if not rows:
                return done
            run: list[tuple[int, bytes]] = []  # consecutive adds are applied as one batch
            for _, op, label, vector in rows:
                if op == _ADD:
                    run.append((label, vector))
                    continue
                self._apply_adds(run)
                run = []
                self._apply_delete(label)
            self._apply_adds(run)
            self._applied = rows[-1][0]
            done += len(rows)

    def _apply_adds(self, items: list[tuple[int, bytes]]) -> None:
        if not items:
            return
        labels = np.array([lab for lab, _ in items], dtype=np.uint64)
        vectors = np.frombuffer(b"".join(v for _, v in items), dtype=np.float32).reshape(len(items), self.dim)
        self._add_to_shards(labels, vectors)

    def _apply_delete(self, label: int) -> None:
        shard = label % self._n
        try:
            with self._shard_locks[shard]:
                self._shards[shard].mark_deleted(label)
        except RuntimeError:
            pass  # not in this shard file (deleted before the checkpoint, or never checkpointed): nothing to do

    def _add_to_shards(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        shard_of = labels % np.uint64(self._n)
        for i in range(self._n):
            mask = shard_of == i
            if mask.any():
                with self._shard_locks[i]:
                    self._add_to_shard(self._shards[i], labels[mask], vectors[mask])

    @staticmethod
    def _add_to_shard(index: hnswlib.Index, labels: np.ndarray, vectors: np.ndarray) -> None:
        need = index.get_current_count() + len(labels)
        if need > index.get_max_elements():
            index.resize_index(max(need, 2 * index.get_max_elements()))
        # A label that exists (even marked deleted) is updated in place; hnswlib unmarks deleted ones.
        index.add_items(vectors, labels)

    # writing ---------------------------------------------------------------------------------------------
    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"{self.path}: vector store opened read-only")

    @property
    def n_shards(self) -> int:
        return self._n

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        self._writable()
        if not chunks:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(chunks), self.dim):
            raise StoreError(f"vectors have shape {vectors.shape}, expected ({len(chunks)}, {self.dim})")
        # The last occurrence of a repeated chunk id wins, as if the calls had been made one by one.
        last = {c.chunk_id: i for i, c in enumerate(chunks)}
        order = sorted(last.values())
        chunks = [chunks[i] for i in order]
        vectors = vectors[order]
        with self._lock:
            labels = self._log_adds(chunks, vectors)
            self._add_to_shards(np.array(labels, dtype=np.uint64), vectors)
            self._after_write(len(chunks))

    def _log_adds(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> list[int]:
        """Log the adds and update ``live`` in one transaction; returns the chunks' labels."""
        with self._db.tx() as conn:
            labels, existing = self._assign_labels(conn, [c.chunk_id for c in chunks])
            conn.executemany(
                "INSERT INTO log (op, label, chunk_id, doc_id, delta, vector) VALUES (?,?,?,?,?,?)",
                [(_ADD, lab, c.chunk_id, c.doc_id, 0 if lab in existing else 1, v.tobytes())
                 for lab, c, v in zip(labels, chunks, vectors, strict=True)])
            conn.executemany("INSERT OR REPLACE INTO live (label, chunk_id, doc_id) VALUES (?,?,?)",
                             [(lab, c.chunk_id, c.doc_id) for lab, c in zip(labels, chunks, strict=True)])
            self._applied = conn.execute("SELECT max(seq) FROM log").fetchone()[0]
        for lab in labels:
            if lab not in existing:
                self._live[lab % self._n] += 1
        return labels

    @staticmethod
    def _assign_labels(conn: sqlite3.Connection, ids: list[str]) -> tuple[list[int], set[int]]:
        """Each chunk's label, and which of them it already holds (a re-add). A chunk keeps the label it
        holds; a new one takes the first of vector_label(id), vector_label(f"{id}#1"), ... that no other
        chunk holds (nor an earlier chunk of this call), recording it in ``relabelled`` if it is not the
        first. ``ids`` are distinct."""
        moved = dict(_select_in(conn, "SELECT chunk_id, label FROM relabelled WHERE chunk_id IN", ids))
        wanted = [moved[cid] if cid in moved else vector_label(cid) for cid in ids]
        owner: dict[int, str] = dict(_select_in(conn, "SELECT label, chunk_id FROM live WHERE label IN", wanted))
        labels: list[int] = []
        existing: set[int] = set()
        for cid, label in zip(ids, wanted, strict=True):
            probe = 0
            while owner.get(label, cid) != cid:  # a collision: another chunk holds this label
                probe += 1
                label = vector_label(f"{cid}#{probe}")
                owner.update(conn.execute("SELECT label, chunk_id FROM live WHERE label = ?", (label,)).fetchall())
            if probe:
                conn.execute("INSERT OR REPLACE INTO relabelled (chunk_id, label) VALUES (?, ?)", (cid, label))
            if label in owner:
                existing.add(label)
            owner[label] = cid  # taken by this call
            labels.append(label)
        return labels, existing

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        self._writable()
        ids = list(dict.fromkeys(doc_ids))
        with self._lock:
            gone: list[tuple[int, str, str]] = []
            with self._db.tx() as conn:
                for part in batched(ids):
                    gone += conn.execute(f"SELECT label, chunk_id, doc_id FROM live WHERE doc_id IN "
                                         f"({marks(len(part))})", part).fetchall()
                    conn.execute(f"DELETE FROM live WHERE doc_id IN ({marks(len(part))})", part)
                for part in batched([cid for _, cid, _ in gone]):
                    conn.execute(f"DELETE FROM relabelled WHERE chunk_id IN ({marks(len(part))})", part)
                conn.executemany("INSERT INTO log (op, label, chunk_id, doc_id, delta) VALUES (?,?,?,?,-1)",
                                 [(_DELETE, lab, cid, did) for lab, cid, did in gone])
                if gone:
                    self._applied = conn.execute("SELECT max(seq) FROM log").fetchone()[0]
            for label, _, _ in gone:
                self._apply_delete(label)
                self._live[label % self._n] -= 1
            self._after_write(len(gone))
        return len(gone)

    def _after_write(self, n_ops: int) -> None:
        self._since_checkpoint += n_ops
        if self._since_checkpoint >= self._checkpoint_every:
            self.flush()

    def flush(self) -> None:
        """Save the shards and checkpoint.json, then drop the log rows the checkpoint covers."""
        if self.read_only:
            return
        with self._lock:
            if self._since_checkpoint == 0 and (self.path / "checkpoint.json").is_file():
                return
            seq = self._applied
            for i, index in enumerate(self._shards):
                tmp = self._shard_file(i).with_suffix(".bin.tmp")
                with self._shard_locks[i]:
                    index.save_index(str(tmp))
                with open(tmp, "rb+") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, self._shard_file(i))
            _atomic_write(self.path / "checkpoint.json", json.dumps({"seq": seq}).encode())
            with self._db.tx() as conn:
                conn.execute("DELETE FROM log WHERE seq <= ?", (seq,))
                conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('compacted', ?)", (seq,))
            self._since_checkpoint = 0

    # reading ---------------------------------------------------------------------------------------------
    def refresh(self) -> int:
        """Catch up with a writer process: replay new log rows, or reload the shards if the writer has
        checkpointed and compacted past what this process applied. Returns the log rows applied."""
        if not self.read_only:
            return 0  # the writer applies its own writes as it makes them
        with self._lock:
            newest, compacted = self._db.query(
                "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'log'), "
                "(SELECT value FROM state WHERE key = 'compacted')")[0]
            if (newest or 0) <= self._applied:
                return 0
            if (compacted or 0) > self._applied:
                self._load()
                return 0
            # Each log row carries its change to the live count; replay exactly the rows counted.
            for shard, delta in self._db.query("SELECT label % ?, sum(delta) FROM log WHERE seq > ? AND seq <= ? "
                                               "GROUP BY 1", (self._n, self._applied, newest)):
                self._live[shard] += delta
            return self._replay(upto=newest)

    def search_shard(self, shard: int, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        self.refresh()
        q = self._as_query(query)
        found = self._knn(shard, q, k) if allowed is None else self._knn_among(shard, q, k, allowed)
        return self._resolve(found)

    def search(self, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        self.refresh()
        q = self._as_query(query)

        def one(i: int) -> list[tuple[int, float]]:
            return self._knn(i, q, k) if allowed is None else self._knn_among(i, q, k, allowed)

        if self._pool is None:
            found = one(0)
        else:  # hnswlib releases the GIL in knn_query, so the shards are searched in parallel
            found = [hit for part in self._pool.map(one, range(self._n)) for hit in part]
        found.sort(key=lambda h: -h[1])
        return self._resolve(found[:k])

    def _as_query(self, query: np.ndarray) -> np.ndarray:
        q = np.asarray(query, dtype=np.float32).reshape(1, -1)
        if q.shape[1] != self.dim:
            raise StoreError(f"query has dim {q.shape[1]}, the index has {self.dim}")
        norm = float(np.linalg.norm(q))
        # Scores are cosines only for a unit query; normalising here costs nothing and forgives callers.
        return q / norm if norm > 0 else q

    def _knn(self, shard: int, q: np.ndarray, k: int) -> list[tuple[int, float]]:
        k = min(k, self._live[shard])
        if k <= 0:
            return []
        index = self._shards[shard]
        with self._shard_locks[shard]:
            index.set_ef(max(self._ef_search, k))
            while True:
                try:
                    labels, dists = index.knn_query(q, k=k, num_threads=1)
                    break
                except RuntimeError:
                    # Too few reachable live elements (many deletions): ask for fewer rather than fail.
                    if k == 1:
                        return []
                    k = max(1, k // 2)
        # space "ip": distance = 1 - <q, v>, so on normalised vectors the cosine is 1 - distance.
        return [(int(lab), 1.0 - float(d)) for lab, d in zip(labels[0], dists[0], strict=True)]

    # filtered search ---------------------------------------------------------------------------------
    def _knn_among(self, shard: int, q: np.ndarray, k: int, allowed: Allowed) -> list[tuple[int, float]]:
        """Top-k of one shard among the vectors of ``allowed`` documents.

        A handful of vectors (at most EXACT_MAX) is an exact scan. Otherwise hnswlib searches the graph
        with the label filter: excluded nodes are still traversed, only allowed ones enter the ef best it
        keeps, and it stops once it holds ef allowed nodes and the next candidate is farther than all of
        them. ef is widened to 2k / share (the allowed share of the shard), up to MAX_EF, so that a
        selective filter searches deeper; a filter with fewer allowed vectors than ef explores every
        node it can reach, which is exact. When it still cannot return k (the filter cut the graph
        apart), the exact scan answers."""
        labels = self._allowed_labels(allowed)[shard]
        k = min(k, len(labels))
        if k <= 0:
            return []
        share = len(labels) / max(1, self._live[shard])
        if len(labels) <= EXACT_MAX:
            return self._exact(shard, q, k, labels)
        wanted = set(labels.tolist())
        index = self._shards[shard]
        with self._shard_locks[shard]:
            index.set_ef(min(MAX_EF, max(self._ef_search, k, int(2 * k / share) + 1)))
            try:
                found, dists = index.knn_query(q, k=k, num_threads=1, filter=wanted.__contains__)
            except RuntimeError:  # fewer than k allowed nodes reachable: scan them instead
                found = None
            finally:
                index.set_ef(self._ef_search)
        if found is None:
            return self._exact(shard, q, k, labels)
        return [(int(lab), 1.0 - float(d)) for lab, d in zip(found[0], dists[0], strict=True)]

    def _exact(self, shard: int, q: np.ndarray, k: int, labels: np.ndarray) -> list[tuple[int, float]]:
        """Exact top-k over the given labels' vectors (inner product = cosine on unit vectors)."""
        with self._shard_locks[shard]:
            try:
                vectors = self._shards[shard].get_items(labels, return_type="numpy")
            except RuntimeError:  # a label a writer logged after this reader's replay: leave it out
                labels = np.array([lab for lab in labels if self._has(shard, int(lab))], dtype=np.uint64)
                if not len(labels):
                    return []
                vectors = self._shards[shard].get_items(labels, return_type="numpy")
        k = min(k, len(labels))
        scores = np.asarray(vectors, dtype=np.float32) @ q[0]
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(labels[i]), float(scores[i])) for i in top]

    def _has(self, shard: int, label: int) -> bool:
        try:
            self._shards[shard].get_items([label])
        except RuntimeError:
            return False
        return True

    def _allowed_labels(self, allowed: Allowed) -> list[np.ndarray]:
        """The live labels of ``allowed`` documents, per shard. The last few answers are kept while nothing
        has changed: one query searches every shard (and each sub-query) with the same set, and a filter
        that is asked again (the same set, equal if not identical) costs one hash of it."""
        cached = self._allowed_cache.get(allowed)
        if cached is not None and cached[0] == self._applied:
            return cached[1]
        labels: list[int] = []
        for part in batched(list(allowed)):
            labels += [r[0] for r in self._db.query(f"SELECT label FROM live WHERE doc_id IN ({marks(len(part))})",
                                                     part)]
        arr = np.array(labels, dtype=np.uint64)
        shard_of = arr % np.uint64(self._n)
        per_shard = [arr[shard_of == i] for i in range(self._n)]
        with self._allowed_lock:
            if len(self._allowed_cache) >= ALLOWED_CACHE:
                del self._allowed_cache[next(iter(self._allowed_cache))]  # the oldest
            self._allowed_cache[allowed] = (self._applied, per_shard)
        return per_shard

    def _resolve(self, found: list[tuple[int, float]]) -> list[ScoredId]:
        """Labels -> chunk ids through the live table (labels deleted by a writer meanwhile drop out)."""
        if not found:
            return []
        labels = [lab for lab, _ in found]
        ids = dict(self._db.query(f"SELECT label, chunk_id FROM live WHERE label IN ({marks(len(labels))})",
                                  labels))
        return [ScoredId(ids[lab], score) for lab, score in found if lab in ids]

    def count(self) -> int:
        return self._db.query("SELECT count(*) FROM live")[0][0]

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_closed", False):
                return
            self.flush()
            if self._pool is not None:
                self._pool.shutdown()
            self._db.close()
            self._closed = True
