"""The IndexWriter on real embedded stores: assembly, the four-store write and its retry, source records,
vanished entries, prune and delete. Documents are built by hand (8-dim vectors), without loaders or an
embedder, so each test states exactly what reaches the writer."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fanrag.errors import StoreError
from fanrag.ids import document_id, source_uri
from fanrag.ingest.assemble import Ready
from fanrag.ingest.sources import SourceFile, SourcePlan
from fanrag.ingest.summary import StageTimes
from fanrag.ingest.work import Piece
from fanrag.ingest.writer import IndexWriter, delete_everywhere
from fanrag.stores import StoreSet, open_stores
from fanrag.types import Chunk, Document

from ..conftest import make_settings

DIM = 8


def source_file(path: Path, text: str = "Tide tables list high water twice a day.\n") -> SourceFile:
    path.write_text(text)
    st = path.stat()
    return SourceFile(path=str(path), uri=source_uri(path), size=st.st_size, mtime=st.st_mtime)


def plan_of(src: SourceFile, *, parts: int = 1, digest: str = "h1", fmt: str = "text") -> SourcePlan:
    return SourcePlan(source=src, format=fmt, content_hash=digest, units=parts, parts=(None,) * parts)


def piece(plan: SourcePlan, n_chunks: int, *, entry: str = "", index: int = 0, n_parts: int = 1) -> Piece:
    """One document's chunks (a whole document, or the ``index``-th of ``n_parts`` pieces)."""
    uri = f"{plan.source.uri}#{entry}" if entry else plan.source.uri
    doc_id = document_id(uri)
    texts = [f"{entry or 'doc'} part {index} chunk {i}: the moon lifts the sea" for i in range(n_chunks)]
    text = "\n".join(texts)
    doc = Document(doc_id=doc_id, uri=uri, source=plan.source.uri, content_hash=f"{plan.content_hash}:{entry}",
                   text=text, title=entry or Path(plan.source.path).name)
    chunks, at = [], 0
    for i, t in enumerate(texts):
        chunks.append(Chunk.make(doc_id, i, t, char_start=at, char_end=at + len(t), n_tokens=len(t.split())))
        at += len(t) + 1
    return Piece(plan, doc, chunks, index, n_parts)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def ready(p: Piece, seed: int = 0) -> Ready:
    return Ready(p, p.doc, p.chunks, vectors(len(p.chunks), seed))


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[StoreSet]:
    with open_stores(make_settings(tmp_path / "home"), dim=DIM, model="test-8") as s:
        yield s


def counts(stores: StoreSet) -> tuple[int, int, int]:
    committed = sum(d.n_chunks for d in stores.meta.documents(status="committed"))
    return committed, stores.vectors.count(), stores.keywords.count()


def test_assemble_joins_the_pieces_of_a_split_document_in_order(tmp_path: Path, stores: StoreSet) -> None:
    plan = plan_of(source_file(tmp_path / "m.pdf"), parts=2)
    writer = IndexWriter(stores)
    second, first = piece(plan, 2, index=1, n_parts=2), piece(plan, 3, index=0, n_parts=2)
    assert writer.assemble(second, vectors(2, 1)) is None  # waits for the first range
    whole = writer.assemble(first, vectors(3, 0))
    assert whole is not None and [c.position for c in whole.chunks] == [0, 1, 2, 3, 4]
    assert [c.text for c in whole.chunks] == [c.text for c in first.chunks + second.chunks]
    assert np.array_equal(whole.vectors, np.concatenate([vectors(3, 0), vectors(2, 1)]))


def test_write_commits_every_store_and_times_each(tmp_path: Path, stores: StoreSet) -> None:
    plan = plan_of(source_file(tmp_path / "a.txt"))
    stages = StageTimes()
    batch = [ready(piece(plan, 3, entry="e1")), ready(piece(plan, 2, entry="e2"), 1)]
    asyncio.run(IndexWriter(stores, stages).write(batch))
    assert counts(stores) == (5, 5, 5)
    docs = stores.meta.documents(status="committed")
    assert {d.doc_id for d in docs} == {r.doc.doc_id for r in batch}
    assert stages.write > 0 and set(stages.write_stores) == {"vectors", "keywords", "graph", "blobs", "meta"}
    hit = stores.vectors.search(batch[1].vectors[0], 1)[0]
    assert hit.chunk_id == batch[1].chunks[0].chunk_id


def test_a_rewrite_replaces_a_documents_chunks(tmp_path: Path, stores: StoreSet) -> None:
    plan = plan_of(source_file(tmp_path / "a.txt"))
    writer = IndexWriter(stores)
    asyncio.run(writer.write([ready(piece(plan, 4))]))
    asyncio.run(writer.write([ready(piece(plan, 1))]))
    assert counts(stores) == (1, 1, 1)


def test_a_store_error_redoes_the_whole_batch(tmp_path: Path, stores: StoreSet,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    plan = plan_of(source_file(tmp_path / "a.txt"))
    add, calls = stores.keywords.add, []

    def flaky(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise StoreError("keywords: connection reset")
        add(*args)

    monkeypatch.setattr(stores.keywords, "add", flaky)
    monkeypatch.setattr(asyncio, "sleep", _no_wait)
    asyncio.run(IndexWriter(stores).write([ready(piece(plan, 3))]))
    assert len(calls) == 2 and counts(stores) == (3, 3, 3)  # the redo deleted the first attempt's rows


async def _no_wait(_: float) -> None:
    return None


def test_the_original_file_is_stored_once_per_content(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "col.jsonl")
    writer = IndexWriter(stores)
    for entry in ("e1", "e2"):  # one collection file over two batches: one blob
        asyncio.run(writer.write([ready(piece(plan_of(src), 1, entry=entry))]))
    keys = {d.blob_key for d in stores.meta.documents(status="committed")}
    assert len(keys) == 1 and stores.blobs.get(keys.pop()) == Path(src.path).read_bytes()


def test_record_done_removes_vanished_entries_and_marks_failures(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "col.jsonl")
    writer = IndexWriter(stores)
    batch = [ready(piece(plan_of(src), 1, entry=e)) for e in ("e1", "e2", "e3")]
    asyncio.run(writer.write(batch))
    keep = {batch[0].doc.doc_id, batch[1].doc.doc_id}
    removed = asyncio.run(writer.record_done(src, "h1", [], keep))
    assert removed == 1 and {d.doc_id for d in stores.meta.documents()} == keep
    rec = stores.meta.get_source(src.uri)
    assert rec is not None and (rec.status, rec.content_hash, rec.n_documents) == ("committed", "h1", 2)

    bad = f"{src.uri}#e9"
    asyncio.run(writer.record_done(src, "h2", [(bad, "e9: no text")], keep | {document_id(bad)}))
    rec = stores.meta.get_source(src.uri)
    assert rec is not None and (rec.status, rec.content_hash, rec.error) == ("partial", "", "e9: no text")
    failures = stores.meta.failures()  # type: ignore[attr-defined]  # the embedded store's failure log
    assert [(u, s, r) for u, s, r, _ in failures] == [(bad, src.uri, "e9: no text")]


def test_record_unchanged_and_failed(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "a.txt")
    writer = IndexWriter(stores)
    asyncio.run(writer.write([ready(piece(plan_of(src), 2))]))
    asyncio.run(writer.record_done(src, "h1", [], {document_id(src.uri)}))
    os.utime(src.path, (1, 1))
    touched = SourceFile(src.path, src.uri, src.size, 1.0)
    assert asyncio.run(writer.record_unchanged(touched, touch=True)) == 1
    rec = stores.meta.get_source(src.uri)
    assert rec is not None and (rec.mtime, rec.content_hash, rec.status) == (1.0, "h1", "committed")

    asyncio.run(writer.record_failed(touched, f"{src.path}: not UTF-8"))
    rec = stores.meta.get_source(src.uri)
    assert rec is not None and (rec.status, rec.error) == ("failed", f"{src.path}: not UTF-8")
    assert counts(stores) == (2, 2, 2)  # a failed re-ingest keeps the last good version


def test_prune_and_delete_everywhere(tmp_path: Path, stores: StoreSet) -> None:
    gone, kept = source_file(tmp_path / "gone.txt"), source_file(tmp_path / "kept.txt")
    writer = IndexWriter(stores)
    for src in (gone, kept):
        asyncio.run(writer.write([ready(piece(plan_of(src), 2))]))
        asyncio.run(writer.record_done(src, "h1", [], {document_id(src.uri)}))
    Path(gone.path).unlink()
    assert asyncio.run(writer.finish_run(prune=True)) == 1
    assert [s.uri for s in stores.meta.sources()] == [kept.uri] and counts(stores) == (2, 2, 2)
    assert delete_everywhere(stores, [document_id(kept.uri)]) == 1 and counts(stores) == (0, 0, 0)
    assert delete_everywhere(stores, []) == 0
