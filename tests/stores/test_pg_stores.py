"""PostgreSQL-specific behaviour of PostgresMetaStore and PgVectorStore (the shared contract tests run
them too, as the "postgres" backend): schema versions, URLs, shard tables, open_stores, bad servers."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fanrag.errors import StoreError
from fanrag.ids import document_id, vector_label
from fanrag.settings import Settings
from fanrag.stores import open_stores
from fanrag.types import Chunk, Document


def doc(name: str, text: str = "hello world", **meta: object) -> Document:
    uri = f"file:///c.jsonl#{name}"
    return Document(doc_id=document_id(uri), uri=uri, source="file:///c.jsonl", content_hash=f"h-{text}",
                    text=text, title=f"Title {name}", metadata=dict(meta))


def chunks_of(d: Document, n: int) -> list[Chunk]:
    return [Chunk.make(d.doc_id, i, f"{d.text} {i}", char_start=i, char_end=i + 1) for i in range(n)]


def pgvector_url(dsn: str) -> str:
    return "pgvector" + dsn.removeprefix("postgresql")


def test_urls_become_postgresql_dsns_and_passwords_stay_out_of_messages() -> None:
    from fanrag.stores._pg import redact, to_postgres_dsn

    assert to_postgres_dsn("pgvector://u@h:5433/db?sslmode=disable") == "postgresql://u@h:5433/db?sslmode=disable"
    assert to_postgres_dsn("postgres://u@h/db") == "postgresql://u@h/db"
    assert redact("postgresql://u:secret@h:1/db") == "postgresql://u:***@h:1/db"
    with pytest.raises(StoreError, match="not a PostgreSQL URL"):
        to_postgres_dsn("mysql://u:secret@h/db")


def test_an_unreachable_server_is_a_store_error_without_the_password(pg_server) -> None:
    from fanrag.stores.meta_postgres import PostgresMetaStore

    closed = f"postgresql://postgres:secret@127.0.0.1:{pg_server.port}/no_such_database"
    with pytest.raises(StoreError, match="cannot connect") as info:
        PostgresMetaStore(closed)
    assert "secret" not in str(info.value) and "***" in str(info.value)


def test_a_newer_meta_schema_is_refused(pg_database: str) -> None:
    from fanrag.stores._pg import PgDb
    from fanrag.stores.meta_postgres import PostgresMetaStore

    PostgresMetaStore(pg_database).close()
    db = PgDb(pg_database)
    db.run(lambda conn: conn.execute("UPDATE fanrag_schema SET version = 99 WHERE component = 'meta'"), write=True)
    db.close()
    with pytest.raises(StoreError, match="newer"):
        PostgresMetaStore(pg_database)


def test_a_meta_reader_needs_a_migrated_schema_and_cannot_write(pg_database: str) -> None:
    from fanrag.stores.meta_postgres import PostgresMetaStore

    with pytest.raises(StoreError, match="schema version 0"):
        PostgresMetaStore(pg_database, read_only=True)
    writer = PostgresMetaStore(pg_database)
    reader = PostgresMetaStore(pg_database, read_only=True)
    d = doc("a")
    writer.commit([d], chunks_of(d, 2), {})
    assert len(reader.get_chunks(writer.chunk_ids_of([d.doc_id]))) == 2
    with pytest.raises(StoreError, match="read-only"):
        reader.mark_pending([d])
    reader.close()
    writer.close()


def test_nul_characters_are_dropped_not_fatal(pg_database: str) -> None:
    from fanrag.stores.meta_postgres import PostgresMetaStore

    store = PostgresMetaStore(pg_database)
    d = doc("a", note="x\x00y")
    chunk = Chunk.make(d.doc_id, 0, "a\x00b", char_start=0, char_end=3, metadata={"v": "c\x00d"})
    store.commit([d], [chunk], {})
    got = store.get_chunks([chunk.chunk_id])[chunk.chunk_id]
    assert (got.text, got.metadata) == ("ab", {"v": "cd"})
    assert store.get_document(d.doc_id).metadata == {"note": "xy"}
    store.close()


def test_vectors_live_in_their_shard_table_with_an_hnsw_index(pg_database: str) -> None:
    from fanrag.stores._pg import PgDb
    from fanrag.stores.vectors_pgvector import PgVectorStore, shard_table

    store = PgVectorStore(pg_database, 8, shards=3, m=8, ef_construction=32)
    chunks = [Chunk.make("d", i, f"t{i}", char_start=0, char_end=1) for i in range(30)]
    store.add(chunks, np.eye(30, 8, dtype=np.float32) + 0.01)
    db = PgDb(pg_database)
    for i in range(3):
        ids = {r[0] for r in db.query(f"SELECT chunk_id FROM {shard_table(i)}")}
        assert ids == {c.chunk_id for c in chunks if vector_label(c.chunk_id) % 3 == i}
    indexes = db.query("SELECT indexdef FROM pg_indexes WHERE indexname LIKE %s", ("fanrag_vectors_%_hnsw",))
    assert len(indexes) == 3 and all("hnsw" in d and "vector_cosine_ops" in d for (d,) in indexes)
    db.close()
    with pytest.raises(StoreError, match="no shard 3"):
        store.search_shard(3, np.ones(8, dtype=np.float32), 1)
    store.close()


def test_open_stores_serves_meta_and_vectors_from_one_database(pg_database: str, tmp_path: Path) -> None:
    from fanrag.stores.meta_postgres import PostgresMetaStore
    from fanrag.stores.vectors_pgvector import PgVectorStore

    settings = Settings(home=tmp_path / "home").replace(stores={"meta": pg_database,
                                                                "vectors": pgvector_url(pg_database)})
    d = doc("a")
    chunks = chunks_of(d, 4)
    vecs = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with open_stores(settings, "write", dim=8, model="m1") as stores:
        assert isinstance(stores.meta, PostgresMetaStore) and isinstance(stores.vectors, PgVectorStore)
        stores.meta.mark_pending([d])
        stores.vectors.add(chunks, vecs)
        stores.meta.commit([d], chunks, {})
    with open_stores(settings, "read") as reader:  # no dim: the index records it
        assert reader.vectors.dim == 8 and reader.vectors.count() == 4
        top = reader.vectors.search(vecs[2], 1)[0]
        assert top.chunk_id == chunks[2].chunk_id and top.score == pytest.approx(1.0, abs=1e-5)
        assert set(reader.meta.get_chunks([top.chunk_id])) == {top.chunk_id}
    with pytest.raises(StoreError, match="another model"):
        open_stores(settings, "write", dim=16, model="m2")


def test_without_psycopg_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanrag.errors import MissingExtraError
    from fanrag.stores.meta_postgres import PostgresMetaStore

    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(MissingExtraError, match=r"fanrag\[postgres\]"):
        PostgresMetaStore("postgresql://u@127.0.0.1:1/db")
