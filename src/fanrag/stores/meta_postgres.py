"""The metadata store in PostgreSQL: the same tables and semantics as SqliteMetaStore, for a server.

A document is ``pending`` from ``mark_pending`` until ``commit``; only chunks of ``committed`` documents
are returned by ``get_chunks``. ``commit`` deletes a batch's old chunks, COPYs the new ones and upserts
the documents in one transaction, so a reader sees either the old version or the new one.

Tables are prefixed ``fanrag_`` so the store can live in a database shared with other applications
(and with PgVectorStore). PostgreSQL text cannot hold NUL characters; they are dropped from chunk and
document text and metadata on the way in. Nor can it hold a lone surrogate (a file name's undecodable
byte, a JSON ``"\ud800"``): each is stored as its escape (``names.storable``), as SQLite does. Names stay
lossless in the source URIs, which percent-encode their bytes.

Several writers may share one database, so a pending row names the writer that marked it, and each
writer holds a session advisory lock on its name for as long as its store is open, on a connection of
its own. ``stale_pending`` returns the rows whose writer's lock is free (it is gone) and that are older
than ``stale_after_s``: a live writer whose connection was cut by a server restart holds no lock until it
marks its next batch, and its batch in flight is younger than that.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self

from ..errors import StoreError
from ..filters.sql import POSTGRES, matching_sql
from ..ids import document_id
from ..names import storable, storable_json
from ..types import Chunk, Document
from ._pg import PgDb, _psycopg, migrate, schema_version
from .base import CachedVector, DocumentRecord, SourceRecord, stale_cache_keys

if TYPE_CHECKING:
    from ..filters import Filter
    from .factory import OpenContext

COMPONENT = "meta"

# Append only: MIGRATIONS[i] moves a database from schema version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE fanrag_sources (
        uri TEXT PRIMARY KEY, content_hash TEXT NOT NULL, size BIGINT NOT NULL, mtime DOUBLE PRECISION NOT NULL,
        status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', n_documents INTEGER NOT NULL DEFAULT 0,
        updated_at DOUBLE PRECISION NOT NULL);
    CREATE TABLE fanrag_documents (
        doc_id TEXT PRIMARY KEY, uri TEXT NOT NULL, source TEXT NOT NULL, content_hash TEXT NOT NULL,
        status TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', n_pages INTEGER NOT NULL DEFAULT 0,
        n_chunks INTEGER NOT NULL DEFAULT 0, blob_key TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
        metadata JSONB, external_id TEXT, updated_at DOUBLE PRECISION NOT NULL);
    CREATE INDEX fanrag_documents_source ON fanrag_documents(source);
    CREATE INDEX fanrag_documents_external ON fanrag_documents(external_id);
    CREATE TABLE fanrag_chunks (
        chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
        char_start INTEGER NOT NULL, char_end INTEGER NOT NULL, page_start INTEGER NOT NULL,
        page_end INTEGER NOT NULL, n_tokens INTEGER NOT NULL, metadata JSONB);
    CREATE INDEX fanrag_chunks_doc ON fanrag_chunks(doc_id, position);
    CREATE TABLE fanrag_failures (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, uri TEXT NOT NULL, source TEXT NOT NULL,
        reason TEXT NOT NULL, at DOUBLE PRECISION NOT NULL);
    CREATE INDEX fanrag_failures_uri ON fanrag_failures(uri)
    """,
    # The writer that marked a pending row (NULL once committed): see stale_pending.
    "ALTER TABLE fanrag_documents ADD COLUMN writer TEXT",
    # The embedding cache (embed/cache.py): an embedder's vector for a text's hash, owned by a document.
    """
    CREATE TABLE fanrag_embed_cache (
        model TEXT NOT NULL, text_hash BYTEA NOT NULL, doc_id TEXT NOT NULL, vector BYTEA NOT NULL,
        PRIMARY KEY (model, text_hash));
    CREATE INDEX fanrag_embed_cache_doc ON fanrag_embed_cache(doc_id)
    """,
)
STALE_AFTER_S = 300.0  # a pending row younger than this is never swept (see the module docstring)
_LOCK_KEY = "hashtextextended(%s, 0)"  # a writer's name -> its advisory lock's 64-bit key

_DOC_COLS = ("doc_id, uri, source, content_hash, status, title, n_pages, n_chunks, blob_key, error, "
             "metadata, updated_at")
_DOC_UPSERT = ("INSERT INTO fanrag_documents (doc_id, uri, source, content_hash, status, title, n_pages, "
               "n_chunks, blob_key, error, metadata, external_id, updated_at, writer) "
               "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s::jsonb,%s,%s,%s) ON CONFLICT (doc_id) DO UPDATE SET "
               + ", ".join(f"{c} = excluded.{c}" for c in ("uri", "source", "content_hash", "status", "title",
                                                           "n_pages", "n_chunks", "blob_key", "error", "metadata",
                                                           "external_id", "updated_at", "writer")))
_SRC_COLS = "uri, content_hash, size, mtime, status, error, n_documents, updated_at"
_CHUNK_COLS = ("chunk_id, doc_id, position, text, char_start, char_end, page_start, page_end, n_tokens, "
               "metadata")


def _text(s: str) -> str:
    return storable(s.replace("\x00", "") if "\x00" in s else s)


def _dumps(obj: dict[str, Any] | None) -> str | None:
    # default=str: metadata comes from loaders and may hold dates or paths; never fail a commit on it.
    # jsonb refuses the escaped NUL (\u0000) just as text refuses the raw one, and lone surrogates too.
    return storable_json(json.dumps(obj, ensure_ascii=False, default=str).replace("\\u0000", "")) if obj else None


def _doc_record(row: tuple[Any, ...]) -> DocumentRecord:
    *head, metadata, updated_at = row
    return DocumentRecord(*head, metadata=metadata or {}, updated_at=updated_at)  # type: ignore[misc]


def _chunk(row: tuple[Any, ...]) -> Chunk:
    *head, metadata = row
    return Chunk(*head, metadata=metadata or {})  # type: ignore[misc]


def _chunk_row(c: Chunk) -> tuple[Any, ...]:
    return (c.chunk_id, c.doc_id, c.position, _text(c.text), c.char_start, c.char_end, c.page_start, c.page_end,
            c.n_tokens, _dumps(c.metadata))


def _doc_row(d: Document, status: str, n_chunks: int = 0, blob_key: str = "", now: float = 0.0,
             writer: str | None = None) -> tuple[Any, ...]:
    external = d.metadata.get("external_id")
    return (d.doc_id, _text(d.uri), _text(d.source), d.content_hash, status, _text(d.title), d.n_pages, n_chunks,
            blob_key, "", _dumps(d.metadata), None if external is None else _text(str(external)), now, writer)


def _executemany(conn: Any, sql: str, rows: list[tuple[Any, ...]]) -> None:
    with conn.cursor() as cur:
        cur.executemany(sql, rows)  # psycopg pipelines the statements: one round trip, not one per row


def _unique_last(chunks: Sequence[Chunk]) -> list[Chunk]:
    """One chunk per id, the last occurrence winning (as if written one by one)."""
    return list({c.chunk_id: c for c in chunks}.values())


class PostgresMetaStore:
    """MetaStore on a PostgreSQL database (``FANRAG_META=postgresql://user@host:port/db``)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """``stores.meta = postgresql://user@host/db``, opened by ``open_stores``."""
        return cls(url, read_only=ctx.read_only)

    def __init__(self, dsn: str, *, read_only: bool = False, pool_size: int = 4,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self._writer = f"fanrag-writer:{uuid.uuid4().hex}"  # this store's name on the rows it marks pending
        self._claim_conn: Any = None  # the connection holding this writer's advisory lock (opened lazily)
        self._stale_after_s = stale_after_s
        self._db = PgDb(dsn, read_only=read_only, max_size=pool_size)
        try:
            if read_only:
                self._check_version()
            else:
                migrate(self._db, COMPONENT, MIGRATIONS)
        except BaseException:
            self._db.close()
            raise

    def _check_version(self) -> None:
        version = schema_version(self._db, COMPONENT)
        if version != len(MIGRATIONS):
            raise StoreError(f"{self._db.where}: metadata schema version {version}, this fanrag needs "
                             f"{len(MIGRATIONS)}; open it once for writing to migrate")

    # sources ---------------------------------------------------------------------------------------------
    def get_source(self, uri: str) -> SourceRecord | None:
        rows = self._db.query(f"SELECT {_SRC_COLS} FROM fanrag_sources WHERE uri = %s", (_text(uri),))
        return SourceRecord(*rows[0]) if rows else None

    def sources(self) -> list[SourceRecord]:
        return [SourceRecord(*r) for r in self._db.query(f"SELECT {_SRC_COLS} FROM fanrag_sources ORDER BY uri")]

    def put_source(self, record: SourceRecord) -> None:
        self._db.run(lambda conn: conn.execute(
            f"INSERT INTO fanrag_sources ({_SRC_COLS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) "
                         "ON CONFLICT (uri) DO UPDATE SET " + ", ".join(
                             f"{c} = excluded.{c}" for c in _SRC_COLS.split(", ")[1:]),
                         (_text(record.uri), record.content_hash, record.size, record.mtime, record.status,
                          _text(record.error), record.n_documents, record.updated_at or time.time())), write=True)

    def delete_source(self, uri: str) -> None:
        self._db.run(lambda conn: conn.execute("DELETE FROM fanrag_sources WHERE uri = %s", (_text(uri),)),
                     write=True)

    # documents -------------------------------------------------------------------------------------------
    def document_hashes(self, source: str) -> dict[str, str]:
        return dict(self._db.query("SELECT doc_id, content_hash FROM fanrag_documents "
                                   "WHERE source = %s AND status = 'committed'", (_text(source),)))

    def mark_pending(self, docs: Sequence[Document]) -> None:
        if not docs:
            return
        self._claim()  # first: a row that names this writer is never taken for a dead writer's
        rows = [_doc_row(d, "pending", now=time.time(), writer=self._writer) for d in docs]
        # The old chunks stay in the table but are invisible (not committed) until commit() replaces them.
        self._db.run(lambda conn: _executemany(conn, _DOC_UPSERT, rows), write=True)

    def commit(self, docs: Sequence[Document], chunks: Sequence[Chunk], blob_keys: dict[str, str]) -> None:
        """Replace each document's chunks and mark it committed, in one transaction.

        ``blob_keys`` maps doc_id (or, for documents that share a file, the source) to the blob key.
        """
        now = time.time()
        per_doc = Counter(c.doc_id for c in _unique_last(chunks))
        doc_rows = [_doc_row(d, "committed", per_doc.get(d.doc_id, 0),
                             blob_keys.get(d.doc_id) or blob_keys.get(d.source, ""), now) for d in docs]
        unique = _unique_last(chunks)

        def replace(conn: Any) -> None:
            conn.execute("DELETE FROM fanrag_chunks WHERE doc_id = ANY(%s) OR chunk_id = ANY(%s)",
                         ([d.doc_id for d in docs], [c.chunk_id for c in unique]))
            with conn.cursor() as cur:
                with cur.copy(f"COPY fanrag_chunks ({_CHUNK_COLS}) FROM STDIN") as copy:
                    for c in unique:
                        copy.write_row(_chunk_row(c))
                cur.executemany(_DOC_UPSERT, doc_rows)

        self._db.run(replace, write=True)

    def mark_failed(self, uri: str, source: str, reason: str) -> None:
        """Record a failure. A document that ``uri`` names becomes ``failed`` unless a previous version of it
        is committed: that version stays visible (a file that turned corrupt loses nothing already ingested)."""
        now = time.time()

        def record(conn: Any) -> None:
            conn.execute("INSERT INTO fanrag_failures (uri, source, reason, at) VALUES (%s,%s,%s,%s)",
                         (_text(uri), _text(source), _text(reason), now))
            conn.execute("UPDATE fanrag_documents SET status = 'failed', error = %s, updated_at = %s "
                         "WHERE doc_id = %s AND status <> 'committed'", (_text(reason), now, document_id(uri)))

        self._db.run(record, write=True)

    def failures(self, limit: int = 100) -> list[tuple[str, str, str, float]]:
        """The most recent failures: (uri, source, reason, unix time)."""
        return [tuple(r) for r in self._db.query(  # type: ignore[misc]
            "SELECT uri, source, reason, at FROM fanrag_failures ORDER BY id DESC LIMIT %s", (limit,))]

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        rows = self._db.query(f"SELECT {_DOC_COLS} FROM fanrag_documents WHERE doc_id = %s", (doc_id,))
        return _doc_record(rows[0]) if rows else None

    def documents(self, status: str | None = None, source: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[DocumentRecord]:
        # A NULL filter matches everything; LIMIT NULL is no limit.
        return [_doc_record(r) for r in self._db.query(
            f"SELECT {_DOC_COLS} FROM fanrag_documents WHERE (%(status)s::text IS NULL OR status = %(status)s) "
            "AND (%(source)s::text IS NULL OR source = %(source)s) ORDER BY source, uri "
            "LIMIT %(limit)s OFFSET %(offset)s",
            {"status": status, "source": None if source is None else _text(source), "limit": limit,
             "offset": offset})]

    def stale_pending(self) -> list[str]:
        """Pending documents whose writer is gone (its advisory lock is free: a crash, or a store that was
        closed mid-batch) and that are older than ``stale_after_s``. This writer's own leftovers count
        too: a store writes one run at a time, and this is asked before a run's first write."""
        self._claim()
        rows = self._db.query("SELECT doc_id, writer FROM fanrag_documents WHERE status = 'pending' "
                              "AND updated_at < %s", (time.time() - self._stale_after_s,))
        alive = {w for w in {w for _, w in rows} if w is not None and w != self._writer and self._holds(w)}
        return [doc_id for doc_id, writer in rows if writer not in alive]

    def _holds(self, writer: str) -> bool:
        """Whether ``writer`` still holds its claim: then its lock cannot be taken from here."""
        psycopg = _psycopg()
        try:
            taken = self._claim_conn.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY})", (writer,)).fetchone()[0]
            if taken:
                self._claim_conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})", (writer,))
        except psycopg.Error as exc:
            raise StoreError(f"{self._db.where}: cannot check writer {writer}: {exc}") from exc
        return not taken

    def _claim(self) -> None:
        """Hold this writer's advisory lock, on a connection of its own (again after a lost connection)."""
        psycopg = _psycopg()
        try:
            if self._claim_conn is not None and not self._claim_conn.closed:
                self._claim_conn.execute("SELECT 1")  # a session cut by a restart lost its lock: find out
                return
        except psycopg.Error:
            self._claim_conn.close()
        try:
            conn = psycopg.connect(self._db.dsn, autocommit=True, connect_timeout=15)
            conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})", (self._writer,))
        except psycopg.Error as exc:
            raise StoreError(f"{self._db.where}: cannot claim the pending rows of this writer: {exc}") from exc
        self._claim_conn = conn

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return 0

        def delete(conn: Any) -> int:
            conn.execute("DELETE FROM fanrag_chunks WHERE doc_id = ANY(%s)", (ids,))
            return conn.execute("DELETE FROM fanrag_documents WHERE doc_id = ANY(%s)", (ids,)).rowcount

        return self._db.run(delete, write=True)

    def doc_ids_by_external(self, external_ids: Sequence[str]) -> dict[str, str]:
        return dict(self._db.query("SELECT external_id, doc_id FROM fanrag_documents WHERE external_id = ANY(%s)",
                                   (list(external_ids),)))

    # chunks ----------------------------------------------------------------------------------------------
    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        cols = ", ".join(f"c.{c}" for c in _CHUNK_COLS.split(", "))
        rows = self._db.query(f"SELECT {cols} FROM fanrag_chunks c JOIN fanrag_documents d ON d.doc_id = c.doc_id "
                              "WHERE d.status = 'committed' AND c.chunk_id = ANY(%s)", (list(chunk_ids),))
        return {r[0]: _chunk(r) for r in rows}

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> list[str]:
        return [r[0] for r in self._db.query("SELECT chunk_id FROM fanrag_chunks WHERE doc_id = ANY(%s) "
                                             "ORDER BY doc_id, position", (list(doc_ids),))]

    def filter_documents(self, flt: Filter) -> list[str]:
        sql, params = matching_sql(flt, POSTGRES, lambda: (r[0] for r in self._db.query(
            "SELECT DISTINCT source FROM fanrag_documents WHERE status = 'committed'")))
        return [r[0] for r in self._db.query(sql, [_text(p) if isinstance(p, str) else p for p in params])]

    def tag_documents(self, sources: Sequence[str], tags: Mapping[str, Any]) -> int:
        if not tags:
            return 0
        return int(self._db.run(lambda conn: conn.execute(
            "UPDATE fanrag_documents SET metadata = coalesce(metadata, '{}'::jsonb) || %s::jsonb "
            "WHERE status = 'committed' AND source = ANY(%s)",
            (_dumps(dict(tags)), [_text(s) for s in dict.fromkeys(sources)])).rowcount, write=True))

    # the embedding cache -------------------------------------------------------------------------------
    def cached_vectors(self, model: str, text_hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        rows = self._db.query("SELECT text_hash, vector FROM fanrag_embed_cache WHERE model = %s "
                              "AND text_hash = ANY(%s)", (model, list(dict.fromkeys(text_hashes))))
        return {bytes(h): bytes(v) for h, v in rows}

    def cache_vectors(self, model: str, entries: Sequence[CachedVector],
                      keep: Mapping[str, Collection[bytes]]) -> None:
        def write(conn: Any) -> None:
            owned = [(m, bytes(h), d) for m, h, d in conn.execute(
                "SELECT model, text_hash, doc_id FROM fanrag_embed_cache WHERE doc_id = ANY(%s)", (list(keep),))]
            stale = stale_cache_keys(owned, model, keep)
            if stale:
                conn.execute("DELETE FROM fanrag_embed_cache c USING unnest(%s::text[], %s::bytea[]) AS s(m, h) "
                             "WHERE c.model = s.m AND c.text_hash = s.h", ([m for m, _ in stale], [h for _, h in stale]))
            if entries:  # one statement whatever the count: the arrays travel as three parameters
                conn.execute("INSERT INTO fanrag_embed_cache (model, text_hash, doc_id, vector) "
                             "SELECT %s, h, d, v FROM unnest(%s::bytea[], %s::text[], %s::bytea[]) AS e(h, d, v) "
                             "ON CONFLICT (model, text_hash) DO NOTHING",
                             (model, [e.text_hash for e in entries], [e.doc_id for e in entries],
                              [e.vector for e in entries]))

        self._db.run(write, write=True)

    def evict_cached_vectors(self, doc_ids: Sequence[str]) -> int:
        ids = list(dict.fromkeys(doc_ids))
        if not ids:
            return 0
        return self._db.run(lambda conn: conn.execute("DELETE FROM fanrag_embed_cache WHERE doc_id = ANY(%s)",
                                                      (ids,)).rowcount, write=True)

    def stats(self) -> dict[str, Any]:
        return self._db.run(self._stats)

    @staticmethod
    def _stats(conn: Any) -> dict[str, Any]:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")  # the counts of one snapshot
        by_status = dict(conn.execute("SELECT status, count(*) FROM fanrag_documents GROUP BY status")
                         .fetchall())
        return {
            "sources": conn.execute("SELECT count(*) FROM fanrag_sources").fetchone()[0],
            "documents": sum(by_status.values()),
            "documents_by_status": by_status,
            "chunks": int(conn.execute("SELECT coalesce(sum(n_chunks), 0) FROM fanrag_documents "
                                       "WHERE status = 'committed'").fetchone()[0]),
            "failures": conn.execute("SELECT count(*) FROM fanrag_failures").fetchone()[0],
            "embed_cache": conn.execute("SELECT count(*) FROM fanrag_embed_cache").fetchone()[0],
            "schema_version": len(MIGRATIONS),
        }

    def close(self) -> None:
        if self._claim_conn is not None:
            self._claim_conn.close()  # releases the claim: rows still pending now are a dead writer's
            self._claim_conn = None
        self._db.close()
