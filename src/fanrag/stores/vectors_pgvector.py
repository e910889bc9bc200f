"""Vectors in PostgreSQL with pgvector: one table per shard, each with an HNSW index (cosine).

Layout in the database::

    fanrag_vector_index   one row: dim, shards, m, ef_construction, model (what the index was built with)
    fanrag_vectors_00..   chunk_id PRIMARY KEY, doc_id, embedding vector(dim); HNSW on embedding
                          (vector_cosine_ops) and a b-tree on doc_id

A chunk lives in shard ``vector_label(chunk_id) % shards``, as in ShardedHnswStore; the label only picks
the shard (rows are keyed by chunk id), so two chunk ids with one label are two rows of one shard.
``add`` deletes the chunk ids it writes and COPYs the new rows (binary), one transaction per shard and
the shards in parallel, so it is an idempotent upsert and durable on return; ``search`` asks every shard
for its local top-k on its own pooled connection, concurrently, and merges by score (score = 1 - cosine
distance). The index row records the embedder; another one is refused (see ``identity``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ..errors import StoreError
from ..ids import vector_label
from ..types import Chunk
from ._pg import PgDb, migrate
from .base import Allowed, ScoredId
from .identity import BuiltWith, check_embedder, should_record
from .merge import merge_shards

if TYPE_CHECKING:
    from .factory import OpenContext

COMPONENT = "vectors"

MIGRATIONS: tuple[str, ...] = (
    """
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE fanrag_vector_index (
        id INTEGER PRIMARY KEY CHECK (id = 1), dim INTEGER NOT NULL, shards INTEGER NOT NULL,
        m INTEGER NOT NULL, ef_construction INTEGER NOT NULL, model TEXT NOT NULL DEFAULT '')
    """,
)


_BUILT = ("dim", "shards", "m", "ef_construction", "model")  # what the index row records
_BUILT_COLUMNS = ", ".join(_BUILT)


def shard_table(i: int) -> str:
    return f"fanrag_vectors_{i:02d}"


def _vector_bytes(vectors: np.ndarray) -> list[bytes]:
    """pgvector's binary format, one value per row: int16 dim, int16 unused, dim big-endian float32."""
    head = struct.pack(">HH", vectors.shape[1], 0)
    big = vectors.astype(">f4", copy=False)
    return [head + row.tobytes() for row in big]


def _with_ef_search(conn: Any, ef_search: int, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    conn.execute("SELECT set_config('hnsw.ef_search', %s, true)", (str(ef_search),))
    return conn.execute(sql, params).fetchall()


def _vector_text(query: np.ndarray) -> str:
    return "[" + ",".join(repr(float(x)) for x in query) + "]"


class PgVectorStore:
    """VectorStore on pgvector (``FANRAG_VECTORS=pgvector://user@host:port/db``)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """``stores.vectors = pgvector://user@host/db``, tuned by ``settings.hnsw``, opened by ``open_stores``."""
        h = ctx.settings.hnsw
        return cls(url, ctx.dim, shards=h.shards, m=h.m, ef_construction=h.ef_construction, ef_search=h.ef_search,
                   read_only=ctx.read_only, model=ctx.model)

    def __init__(self, dsn: str, dim: int | None, shards: int = 2, m: int = 16, ef_construction: int = 200,
                 ef_search: int = 128, *, read_only: bool = False, model: str = "") -> None:
        self.read_only = read_only
        self._ef_search = ef_search
        # One connection per shard for a search, plus room for a concurrent writer.
        # ef_search bounds what one HNSW scan can return; iterative scans continue past dead (deleted, not
        # yet vacuumed) tuples instead of returning fewer than k. Set once per connection, a k-NN query
        # is one round trip.
        self._db = PgDb(dsn, read_only=read_only, max_size=max(shards, 1) + 2,
                        session={"hnsw.ef_search": str(ef_search), "hnsw.iterative_scan": "relaxed_order"})
        try:
            built = self._open_index(dim, shards, m, ef_construction, model)
        except BaseException:
            self._db.close()
            raise
        self.dim: int = built["dim"]
        self._n: int = built["shards"]
        self._tables = [shard_table(i) for i in range(self._n)]
        self._pool = ThreadPoolExecutor(self._n, thread_name_prefix="pgvector") if self._n > 1 else None
        self._closed = False

    # opening ---------------------------------------------------------------------------------------------
    def _open_index(self, dim: int | None, shards: int, m: int, efc: int, model: str) -> dict[str, Any]:
        """Use what the index was built with; refuse another embedder (see ``identity``)."""
        built = self._read_index()
        if built is None:
            if self.read_only or dim is None:
                raise StoreError(f"{self._db.where}: no vector index here yet (ingest something first)")
            migrate(self._db, COMPONENT, MIGRATIONS)
            built = self._create_index(int(dim), shards, m, efc, model)  # or another writer's, created first
        elif not self.read_only:
            migrate(self._db, COMPONENT, MIGRATIONS)
        self._check(built, dim, model)
        if should_record(BuiltWith(built["dim"], built["model"]), model, self.read_only):
            built = self._record_model(model)
            self._check(built, dim, model)  # another writer may have recorded its model first
        return built

    def _check(self, built: dict[str, Any], dim: int | None, model: str) -> None:
        check_embedder(self._db.where, BuiltWith(built["dim"], built["model"]), dim, model,
                       remedy="use another database")

    def _read_index(self) -> dict[str, Any] | None:
        if not self._db.query("SELECT to_regclass('fanrag_vector_index') IS NOT NULL")[0][0]:
            return None
        rows = self._db.query(f"SELECT {_BUILT_COLUMNS} FROM fanrag_vector_index")
        return dict(zip(_BUILT, rows[0], strict=True)) if rows else None

    def _record_model(self, model: str) -> dict[str, Any]:
        """Record ``model`` in an index that has none recorded (one statement: two writers cannot both)."""
        row = self._db.run(lambda conn: conn.execute(
            "UPDATE fanrag_vector_index SET model = CASE WHEN model = '' THEN %s ELSE model END WHERE id = 1 "
            f"RETURNING {_BUILT_COLUMNS}", (model,)).fetchone(), write=True)
        return dict(zip(_BUILT, row, strict=True))

    def _create_index(self, dim: int, shards: int, m: int, efc: int, model: str) -> dict[str, Any]:
        return self._db.run(lambda conn: self._create_tables(conn, dim, shards, m, efc, model), write=True)

    @staticmethod
    def _create_tables(conn: Any, dim: int, shards: int, m: int, efc: int, model: str) -> dict[str, Any]:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('fanrag_vector_index'))")
        conn.execute("INSERT INTO fanrag_vector_index (id, dim, shards, m, ef_construction, model) "
                     "VALUES (1, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING", (dim, shards, m, efc, model))
        built = dict(zip(_BUILT, conn.execute(f"SELECT {_BUILT_COLUMNS} FROM fanrag_vector_index").fetchone(),
                         strict=True))
        dim, shards, m, efc = built["dim"], built["shards"], built["m"], built["ef_construction"]
        for i in range(shards):
            table = shard_table(i)
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (chunk_id TEXT PRIMARY KEY, "
                         f"doc_id TEXT NOT NULL, embedding vector({int(dim)}) NOT NULL)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_doc ON {table} (doc_id)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_hnsw ON {table} USING hnsw "
                         f"(embedding vector_cosine_ops) WITH (m = {int(m)}, ef_construction = {int(efc)})")
        return built

    # writing ---------------------------------------------------------------------------------------------
    @property
    def n_shards(self) -> int:
        return self._n

    def add(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if not chunks:
            return
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (len(chunks), self.dim):
            raise StoreError(f"vectors have shape {vectors.shape}, expected ({len(chunks)}, {self.dim})")
        # The last occurrence of a repeated chunk id wins, as if the calls had been made one by one.
        order = sorted({c.chunk_id: i for i, c in enumerate(chunks)}.values())
        chunks = [chunks[i] for i in order]
        blobs = _vector_bytes(vectors[order])
        by_shard: dict[int, list[int]] = {}
        for i, c in enumerate(chunks):
            by_shard.setdefault(vector_label(c.chunk_id) % self._n, []).append(i)

        def write(shard: int, rows: list[int]) -> None:
            table, part, part_blobs = self._tables[shard], [chunks[i] for i in rows], [blobs[i] for i in rows]
            self._db.run(lambda conn: self._upsert(conn, table, part, part_blobs), write=True)

        # One transaction per shard, on its own connection: the shards' HNSW inserts (the cost of an add)
        # run in parallel on the server. A failure can leave some shards written; writing them again
        # (the pipeline's retry) is harmless, as each shard's upsert is idempotent.
        if self._pool is None or len(by_shard) == 1:
            for shard, rows in by_shard.items():
                write(shard, rows)
        else:
            futures = [self._pool.submit(write, shard, rows) for shard, rows in by_shard.items()]
            wait(futures)  # all of them, so that no write is still running when the caller retries
            for future in futures:
                future.result()

    @staticmethod
    def _upsert(conn: Any, table: str, chunks: list[Chunk], blobs: list[bytes]) -> None:
        conn.execute(f"DELETE FROM {table} WHERE chunk_id = ANY(%s)", ([c.chunk_id for c in chunks],))
        with conn.cursor() as cur, cur.copy(f"COPY {table} (chunk_id, doc_id, embedding) FROM STDIN "
                                            "(FORMAT BINARY)") as copy:
            # Binary COPY sends no type names: the bytes of the third field are read by vector's receive
            # function, so "bytea" here only picks psycopg's raw-bytes dumper.
            copy.set_types(["text", "text", "bytea"])
            for c, blob in zip(chunks, blobs, strict=True):
                copy.write_row((c.chunk_id, c.doc_id, blob))

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return 0
        return self._db.run(lambda conn: sum(conn.execute(f"DELETE FROM {t} WHERE doc_id = ANY(%s)", (ids,)).rowcount
                                             for t in self._tables), write=True)

    def flush(self) -> None:
        """Nothing to do: every write is committed (durable) on return."""

    # reading ---------------------------------------------------------------------------------------------
    def search_shard(self, shard: int, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        if not 0 <= shard < self._n:
            raise StoreError(f"no shard {shard}: the index has {self._n}")
        return self._knn(shard, self._as_query(query), k, allowed)

    def search(self, query: np.ndarray, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        q = self._as_query(query)
        if self._pool is None:
            return self._knn(0, q, k, allowed)
        return merge_shards(self._pool.map(lambda i: self._knn(i, q, k, allowed), range(self._n)), k)

    def _as_query(self, query: np.ndarray) -> str:
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.dim:
            raise StoreError(f"query has dim {q.shape[0]}, the index has {self.dim}")
        return _vector_text(q)  # cosine distance ignores the norm: no need to normalise

    def _knn(self, shard: int, q: str, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        if k <= 0 or (allowed is not None and not allowed):
            return []
        # A filter is a WHERE on doc_id: PostgreSQL picks the plan (the doc_id b-tree and an exact sort
        # when few rows pass; the HNSW index otherwise, whose iterative scan goes on past the rows the
        # filter drops until it has k, up to hnsw.max_scan_tuples).
        where, params = ("", (q, k)) if allowed is None else ("WHERE doc_id = ANY(%s) ", (q, list(allowed), k))
        sql = (f"SELECT chunk_id, embedding <=> %s::vector AS d FROM {self._tables[shard]} {where}"
               "ORDER BY d LIMIT %s")
        if k <= self._ef_search:
            rows = self._db.query(sql, params)
        else:  # a larger k needs a larger ef_search, for this query only
            rows = self._db.run(lambda conn: _with_ef_search(conn, k, sql, params))
        # relaxed_order may return a few rows slightly out of order: sort the local top-k.
        return sorted((ScoredId(cid, 1.0 - float(d)) for cid, d in rows), key=lambda h: -h.score)

    def count(self) -> int:
        return int(self._db.query("SELECT " + " + ".join(f"(SELECT count(*) FROM {t})" for t in self._tables))[0][0])

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pool is not None:
            self._pool.shutdown()
        self._db.close()
