"""The metadata store in SQLite: sources, documents, chunks, failures. The source of truth for queries.

A document is ``pending`` from ``mark_pending`` until ``commit``; only chunks of ``committed`` documents
are returned by ``get_chunks``, so whatever other stores hold for a half-written batch stays invisible.
One writer process holds the home's lock, so whatever is pending when it starts a run was left by a
writer that is gone (``stale_pending``).

Any ``str`` can be written: SQLite's UTF-8 cannot hold a lone surrogate (a file name's undecodable byte, a
JSON ``"\ud800"``), so each is stored as its escape (``names.storable``). Names stay lossless in the
source URIs, which percent-encode their bytes.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from ..filters.sql import SQLITE, matching_sql
from ..ids import document_id
from ..names import storable, storable_json
from ..types import Chunk, Document
from ._sqlite import SqliteDb, batched, marks, migrate, schema_version
from .base import CachedVector, DocumentRecord, SourceRecord, stale_cache_keys

if TYPE_CHECKING:
    from ..filters import Filter
    from .factory import OpenContext

# Append only: migrations[i] moves a database from schema version i to i + 1.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE sources (
        uri TEXT PRIMARY KEY, content_hash TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL,
        status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', n_documents INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL);
    CREATE TABLE documents (
        doc_id TEXT PRIMARY KEY, uri TEXT NOT NULL, source TEXT NOT NULL, content_hash TEXT NOT NULL,
        status TEXT NOT NULL, title TEXT NOT NULL DEFAULT '', n_pages INTEGER NOT NULL DEFAULT 0,
        n_chunks INTEGER NOT NULL DEFAULT 0, blob_key TEXT NOT NULL DEFAULT '', error TEXT NOT NULL DEFAULT '',
        metadata TEXT, external_id TEXT, updated_at REAL NOT NULL);
    CREATE INDEX documents_source ON documents(source);
    CREATE INDEX documents_external ON documents(external_id);
    CREATE TABLE chunks (
        chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, position INTEGER NOT NULL, text TEXT NOT NULL,
        char_start INTEGER NOT NULL, char_end INTEGER NOT NULL, page_start INTEGER NOT NULL,
        page_end INTEGER NOT NULL, n_tokens INTEGER NOT NULL, metadata TEXT);
    CREATE INDEX chunks_doc ON chunks(doc_id, position);
    CREATE TABLE failures (
        id INTEGER PRIMARY KEY AUTOINCREMENT, uri TEXT NOT NULL, source TEXT NOT NULL, reason TEXT NOT NULL,
        at REAL NOT NULL);
    CREATE INDEX failures_uri ON failures(uri)
    """,
    # The embedding cache (embed/cache.py): an embedder's vector for a text's hash, owned by a document.
    """
    CREATE TABLE embed_cache (
        model TEXT NOT NULL, text_hash BLOB NOT NULL, doc_id TEXT NOT NULL, vector BLOB NOT NULL,
        PRIMARY KEY (model, text_hash));
    CREATE INDEX embed_cache_doc ON embed_cache(doc_id)
    """,
)

_DOC_COLS = ("doc_id, uri, source, content_hash, status, title, n_pages, n_chunks, blob_key, error, "
             "metadata, updated_at")
# An upsert, not INSERT OR REPLACE: REPLACE deletes and re-inserts the row, rewriting every index entry;
# an update touches only the indexes whose columns changed (usually none).
_DOC_INSERT = (f"INSERT INTO documents ({_DOC_COLS.replace(', updated_at', '')}, external_id, updated_at) "
               "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (doc_id) DO UPDATE SET "
               + ", ".join(f"{c} = excluded.{c}" for c in (_DOC_COLS + ", external_id").split(", ")[1:]))
_SRC_COLS = "uri, content_hash, size, mtime, status, error, n_documents, updated_at"
_CHUNK_COLS = ("chunk_id, doc_id, position, text, char_start, char_end, page_start, page_end, n_tokens, "
               "metadata")


def _dumps(obj: dict[str, Any] | None) -> str | None:
    # default=str: metadata comes from loaders and may hold dates or paths; never fail a commit on it.
    return storable_json(json.dumps(obj, ensure_ascii=False, default=str)) if obj else None


def _row(*values: Any) -> tuple[Any, ...]:
    """Parameters SQLite can encode: every str made storable (a no-op for nearly every value)."""
    return tuple(storable(v) if isinstance(v, str) else v for v in values)


def _loads(text: str | None) -> dict[str, Any]:
    return json.loads(text) if text else {}


def _doc_record(row: tuple[Any, ...]) -> DocumentRecord:
    *head, metadata, updated_at = row
    return DocumentRecord(*head, metadata=_loads(metadata), updated_at=updated_at)


def _chunk(row: tuple[Any, ...]) -> Chunk:
    *head, metadata = row
    return Chunk(*head, metadata=_loads(metadata))


def _chunk_row(c: Chunk) -> tuple[Any, ...]:
    return _row(c.chunk_id, c.doc_id, c.position, c.text, c.char_start, c.char_end, c.page_start, c.page_end,
                c.n_tokens, _dumps(c.metadata))


def _external_id(doc: Document) -> str | None:
    value = doc.metadata.get("external_id")
    return None if value is None else str(value)


class SqliteMetaStore:
    """MetaStore on one SQLite file (``home/meta.sqlite``)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """The embedded default: ``home/meta.sqlite``, opened by ``open_stores``."""
        return cls(ctx.settings.home / "meta.sqlite", read_only=ctx.read_only)

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        # synchronous=NORMAL: a commit survives a killed process but may be lost in a power cut. That is
        # safe here because the metadata store is written last in each batch: the other stores fsync
        # their writes (FULL) before commit() runs, and a lost commit only means the batch is re-ingested.
        self._db = SqliteDb(Path(path), read_only=read_only, synchronous="NORMAL")
        if read_only:
            self._check_version()
        else:
            migrate(self._db, MIGRATIONS)

    def _check_version(self) -> None:
        from ..errors import StoreError

        version = schema_version(self._db)
        if version != len(MIGRATIONS):
            raise StoreError(f"{self._db.path}: schema version {version}, this fanrag needs {len(MIGRATIONS)}; "
                             "open it once for writing to migrate")

    # sources ---------------------------------------------------------------------------------------------
    def get_source(self, uri: str) -> SourceRecord | None:
        rows = self._db.query(f"SELECT {_SRC_COLS} FROM sources WHERE uri = ?", _row(uri))
        return SourceRecord(*rows[0]) if rows else None

    def sources(self) -> list[SourceRecord]:
        return [SourceRecord(*r) for r in self._db.query(f"SELECT {_SRC_COLS} FROM sources ORDER BY uri")]

    def put_source(self, record: SourceRecord) -> None:
        with self._db.tx() as conn:
            conn.execute(f"INSERT OR REPLACE INTO sources ({_SRC_COLS}) VALUES (?,?,?,?,?,?,?,?)",
                         _row(record.uri, record.content_hash, record.size, record.mtime, record.status,
                              record.error, record.n_documents, record.updated_at or time.time()))

    def delete_source(self, uri: str) -> None:
        with self._db.tx() as conn:
            conn.execute("DELETE FROM sources WHERE uri = ?", _row(uri))

    # documents -------------------------------------------------------------------------------------------
    def document_hashes(self, source: str) -> dict[str, str]:
        rows = self._db.query("SELECT doc_id, content_hash FROM documents WHERE source = ? AND status = ?",
                              _row(source, "committed"))
        return dict(rows)

    def mark_pending(self, docs: Sequence[Document]) -> None:
        now = time.time()
        rows = [_row(d.doc_id, d.uri, d.source, d.content_hash, "pending", d.title, d.n_pages, 0, "", "",
                     _dumps(d.metadata), _external_id(d), now) for d in docs]
        with self._db.tx() as conn:
            # Upsert that keeps nothing of a previous commit: the old chunks stay in the table but are
            # invisible (not committed) until commit() replaces them.
            conn.executemany(_DOC_INSERT, rows)

    def commit(self, docs: Sequence[Document], chunks: Sequence[Chunk], blob_keys: dict[str, str]) -> None:
        """Replace each document's chunks and mark it committed, in one transaction.

        ``blob_keys`` maps doc_id (or, for documents that share a file, the source) to the blob key.
        """
        now = time.time()
        per_doc = Counter(c.doc_id for c in chunks)
        doc_rows = [_row(d.doc_id, d.uri, d.source, d.content_hash, "committed", d.title, d.n_pages,
                         per_doc.get(d.doc_id, 0), blob_keys.get(d.doc_id) or blob_keys.get(d.source, ""), "",
                         _dumps(d.metadata), _external_id(d), now) for d in docs]
        doc_ids = [d.doc_id for d in docs]
        with self._db.tx() as conn:
            for part in batched(doc_ids):
                conn.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks(len(part))})", part)
            conn.executemany(f"INSERT OR REPLACE INTO chunks ({_CHUNK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                             [_chunk_row(c) for c in chunks])
            conn.executemany(_DOC_INSERT, doc_rows)

    def mark_failed(self, uri: str, source: str, reason: str) -> None:
        """Record a failure. A document that ``uri`` names becomes ``failed`` unless a previous version of it
        is committed: that version stays visible (a file that turned corrupt loses nothing already ingested)."""
        now = time.time()
        with self._db.tx() as conn:
            conn.execute("INSERT INTO failures (uri, source, reason, at) VALUES (?,?,?,?)",
                         _row(uri, source, reason, now))
            conn.execute("UPDATE documents SET status = 'failed', error = ?, updated_at = ? "
                         "WHERE doc_id = ? AND status != 'committed'", _row(reason, now, document_id(uri)))

    def failures(self, limit: int = 100) -> list[tuple[str, str, str, float]]:
        """The most recent failures: (uri, source, reason, unix time)."""
        return [tuple(r) for r in self._db.query(  # type: ignore[misc]
            "SELECT uri, source, reason, at FROM failures ORDER BY id DESC LIMIT ?", (limit,))]

    def get_document(self, doc_id: str) -> DocumentRecord | None:
        rows = self._db.query(f"SELECT {_DOC_COLS} FROM documents WHERE doc_id = ?", (doc_id,))
        return _doc_record(rows[0]) if rows else None

    def documents(self, status: str | None = None, source: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[DocumentRecord]:
        where, params = [], []
        if status is not None:
            where.append("status = ?")
            params.append(status)
        if source is not None:
            where.append("source = ?")
            params.append(storable(source))
        sql = f"SELECT {_DOC_COLS} FROM documents"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY source, uri LIMIT ? OFFSET ?"
        params += [-1 if limit is None else limit, offset]
        return [_doc_record(r) for r in self._db.query(sql, params)]

    def stale_pending(self) -> list[str]:
        """Every pending document: the home's lock admits one writer process, which calls this before its
        run writes anything, so whoever marked them is gone."""
        return [r[0] for r in self._db.query("SELECT doc_id FROM documents WHERE status = 'pending'")]

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        ids = list(dict.fromkeys(doc_ids))
        removed = 0
        with self._db.tx() as conn:
            for part in batched(ids):
                conn.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks(len(part))})", part)
                removed += conn.execute(f"DELETE FROM documents WHERE doc_id IN ({marks(len(part))})",
                                        part).rowcount
        return removed

    def doc_ids_by_external(self, external_ids: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in batched(list(external_ids)):
            out.update(self._db.query(
                f"SELECT external_id, doc_id FROM documents WHERE external_id IN ({marks(len(part))})", part))
        return out

    # chunks ----------------------------------------------------------------------------------------------
    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        out: dict[str, Chunk] = {}
        cols = ", ".join(f"c.{c.strip()}" for c in _CHUNK_COLS.split(","))
        for part in batched(list(chunk_ids)):
            rows = self._db.query(
                # CROSS JOIN fixes the loop order: look chunks up by id, then their document.
                f"SELECT {cols} FROM chunks c CROSS JOIN documents d ON d.doc_id = c.doc_id "
                f"WHERE d.status = 'committed' AND c.chunk_id IN ({marks(len(part))})", part)
            out.update((r[0], _chunk(r)) for r in rows)
        return out

    def chunk_ids_of(self, doc_ids: Sequence[str]) -> list[str]:
        out: list[str] = []
        for part in batched(list(doc_ids)):
            out += [r[0] for r in self._db.query(
                f"SELECT chunk_id FROM chunks WHERE doc_id IN ({marks(len(part))}) ORDER BY doc_id, position",
                part)]
        return out

    def filter_documents(self, flt: Filter) -> list[str]:
        sql, params = matching_sql(flt, SQLITE, lambda: (r[0] for r in self._db.query(
            "SELECT DISTINCT source FROM documents WHERE status = 'committed'")))
        return [r[0] for r in self._db.query(sql, _row(*params))]

    def tag_documents(self, sources: Sequence[str], tags: Mapping[str, Any]) -> int:
        if not tags:
            return 0
        sets = ", ".join("?, json(?)" for _ in tags)  # json(): a number stays a number
        pairs = [v for key, value in tags.items() for v in (f'$."{key}"', json.dumps(value))]
        tagged = 0
        with self._db.tx() as conn:
            for part in batched(list(dict.fromkeys(sources)), 500):
                tagged += conn.execute(
                    f"UPDATE documents SET metadata = json_set(coalesce(metadata, '{{}}'), {sets}) "
                    f"WHERE status = 'committed' AND source IN ({marks(len(part))})", _row(*pairs, *part)).rowcount
        return tagged

    # the embedding cache -------------------------------------------------------------------------------
    def cached_vectors(self, model: str, text_hashes: Sequence[bytes]) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for part in batched(list(dict.fromkeys(text_hashes))):
            out.update(self._db.query("SELECT text_hash, vector FROM embed_cache WHERE model = ? AND "
                                      f"text_hash IN ({marks(len(part))})", (model, *part)))
        return out

    def cache_vectors(self, model: str, entries: Sequence[CachedVector],
                      keep: Mapping[str, Collection[bytes]]) -> None:
        with self._db.tx() as conn:
            owners = list(keep)
            owned = [row for part in batched(owners) for row in conn.execute(
                f"SELECT model, text_hash, doc_id FROM embed_cache WHERE doc_id IN ({marks(len(part))})", part)]
            conn.executemany("DELETE FROM embed_cache WHERE model = ? AND text_hash = ?",
                             stale_cache_keys(owned, model, keep))
            conn.executemany("INSERT OR IGNORE INTO embed_cache (model, text_hash, doc_id, vector) "
                             "VALUES (?,?,?,?)", [(model, e.text_hash, e.doc_id, e.vector) for e in entries])

    def evict_cached_vectors(self, doc_ids: Sequence[str]) -> int:
        removed = 0
        with self._db.tx() as conn:
            for part in batched(list(dict.fromkeys(doc_ids))):
                removed += conn.execute(f"DELETE FROM embed_cache WHERE doc_id IN ({marks(len(part))})",
                                        part).rowcount
        return removed

    def stats(self) -> dict[str, Any]:
        with self._db.read() as conn:
            by_status = dict(conn.execute("SELECT status, count(*) FROM documents GROUP BY status").fetchall())
            return {
                "sources": conn.execute("SELECT count(*) FROM sources").fetchone()[0],
                "documents": sum(by_status.values()),
                "documents_by_status": by_status,
                "chunks": conn.execute("SELECT coalesce(sum(n_chunks), 0) FROM documents "
                                       "WHERE status = 'committed'").fetchone()[0],
                "failures": conn.execute("SELECT count(*) FROM failures").fetchone()[0],
                "embed_cache": conn.execute("SELECT count(*) FROM embed_cache").fetchone()[0],
                "schema_version": len(MIGRATIONS),
            }

    def close(self) -> None:
        self._db.close()
