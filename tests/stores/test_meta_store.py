"""MetaStore contract (every backend): pending/commit visibility, chunk replacement, lookups."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fanrag.errors import StoreError
from fanrag.ids import document_id
from fanrag.stores.base import MetaStore, SourceRecord
from fanrag.types import Chunk, Document


def doc(name: str, text: str = "hello world", source: str = "file:///c.jsonl", **meta: object) -> Document:
    uri = f"{source}#{name}"
    return Document(doc_id=document_id(uri), uri=uri, source=source, content_hash=f"h-{text}", text=text,
                    title=f"Title {name}", metadata=dict(meta))


def chunks_of(d: Document, n: int) -> list[Chunk]:
    return [Chunk.make(d.doc_id, i, f"{d.text} {i}", char_start=i, char_end=i + 1, page_start=1, page_end=2,
                       n_tokens=3, metadata={"k": i}) for i in range(n)]


def test_is_a_meta_store(meta_store) -> None:
    assert isinstance(meta_store, MetaStore)


def test_commit_makes_chunks_visible_with_all_fields(meta_store) -> None:
    d = doc("a")
    chunks = chunks_of(d, 3)
    meta_store.mark_pending([d])
    assert meta_store.get_chunks([c.chunk_id for c in chunks]) == {}
    meta_store.commit([d], chunks, {d.doc_id: "blobkey"})
    got = meta_store.get_chunks([c.chunk_id for c in chunks] + ["missing"])
    assert got == {c.chunk_id: c for c in chunks}
    assert got[chunks[2].chunk_id].metadata == {"k": 2}
    rec = meta_store.get_document(d.doc_id)
    assert (rec.status, rec.n_chunks, rec.blob_key, rec.title) == ("committed", 3, "blobkey", "Title a")


def test_commit_replaces_a_documents_chunks(meta_store) -> None:
    d1 = doc("a", "old text")
    old = chunks_of(d1, 4)
    meta_store.commit([d1], old, {})
    d2 = doc("a", "new text")
    new = chunks_of(d2, 2)
    meta_store.mark_pending([d2])
    assert meta_store.get_chunks([c.chunk_id for c in old]) == {}  # pending hides the old version
    meta_store.commit([d2], new, {})
    assert meta_store.get_chunks([c.chunk_id for c in old]) == {}
    assert set(meta_store.get_chunks([c.chunk_id for c in new])) == {c.chunk_id for c in new}
    assert meta_store.chunk_ids_of([d2.doc_id]) == [c.chunk_id for c in new]
    assert meta_store.document_hashes("file:///c.jsonl") == {d2.doc_id: "h-new text"}


def test_documents_filters_and_external_ids(meta_store) -> None:
    a, b, c = doc("a", external_id="E1"), doc("b", external_id=7), doc("c", source="file:///other.txt")
    meta_store.commit([a, b], chunks_of(a, 1) + chunks_of(b, 1), {})
    meta_store.mark_pending([c])
    assert {r.doc_id for r in meta_store.documents(status="committed")} == {a.doc_id, b.doc_id}
    assert [r.doc_id for r in meta_store.documents(source="file:///other.txt")] == [c.doc_id]
    assert len(meta_store.documents(limit=2)) == 2 and len(meta_store.documents(limit=2, offset=2)) == 1
    assert meta_store.doc_ids_by_external(["E1", "7", "nope"]) == {"E1": a.doc_id, "7": b.doc_id}
    assert meta_store.get_document(a.doc_id).metadata == {"external_id": "E1"}


def test_delete_documents_and_failures(meta_store) -> None:
    a, b = doc("a"), doc("b")
    meta_store.commit([a, b], chunks_of(a, 2) + chunks_of(b, 2), {})
    assert meta_store.delete_documents([a.doc_id, "absent"]) == 1
    assert meta_store.get_document(a.doc_id) is None
    assert meta_store.chunk_ids_of([a.doc_id]) == []
    # A committed document whose file turned bad keeps its last good version visible.
    meta_store.mark_failed(b.uri, b.source, "corrupt")
    assert meta_store.get_document(b.doc_id).status == "committed"
    assert len(meta_store.get_chunks(meta_store.chunk_ids_of([b.doc_id]))) == 2
    # One that never committed (here: left pending by a crash) is marked failed.
    c = doc("c")
    meta_store.mark_pending([c])
    meta_store.mark_failed(c.uri, c.source, "corrupt")
    assert meta_store.get_document(c.doc_id).status == "failed"
    stats = meta_store.stats()
    assert stats["documents_by_status"] == {"committed": 1, "failed": 1}
    assert stats["chunks"] == 2 and stats["failures"] == 2


def test_sources_round_trip(meta_store) -> None:
    rec = SourceRecord(uri="file:///x.pdf", content_hash="h", size=10, mtime=1.5, status="committed",
                       n_documents=1, updated_at=2.0)
    meta_store.put_source(rec)
    assert meta_store.get_source("file:///x.pdf") == rec
    assert meta_store.sources() == [rec]
    meta_store.delete_source("file:///x.pdf")
    assert meta_store.get_source("file:///x.pdf") is None


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    from fanrag.stores.meta_sqlite import SqliteMetaStore

    SqliteMetaStore(tmp_path / "m.sqlite").close()
    with sqlite3.connect(tmp_path / "m.sqlite") as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="newer"):
        SqliteMetaStore(tmp_path / "m.sqlite")


def test_reader_sees_writer_commits(tmp_path: Path) -> None:
    from fanrag.stores.meta_sqlite import SqliteMetaStore

    writer = SqliteMetaStore(tmp_path / "m.sqlite")
    reader = SqliteMetaStore(tmp_path / "m.sqlite", read_only=True)
    d = doc("a")
    writer.commit([d], chunks_of(d, 2), {})
    assert len(reader.get_chunks(writer.chunk_ids_of([d.doc_id]))) == 2
    with pytest.raises(StoreError, match="read-only"):
        reader.mark_pending([d])
    reader.close()
    writer.close()
