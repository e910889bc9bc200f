"""open_stores: layout, the writer lock, readers, the embedder check (dim and model), unknown schemes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fanrag.errors import ConfigError, IndexLocked, StoreError
from fanrag.settings import Settings
from fanrag.stores import StoreSet, open_stores
from fanrag.types import Chunk, Document


def settings(home: Path, **stores: str) -> Settings:
    return Settings(home=home).replace(stores=stores) if stores else Settings(home=home)


def test_write_then_read(tmp_path: Path) -> None:
    s = settings(tmp_path / "home")
    chunk = Chunk.make("d", 0, "hello running world", char_start=0, char_end=5)
    vec = np.ones((1, 8), dtype=np.float32) / np.sqrt(8)
    with open_stores(s, "write", dim=8) as stores:
        assert isinstance(stores, StoreSet)
        stores.vectors.add([chunk], vec)
        stores.keywords.add([chunk])
        reader = open_stores(s, "read")  # no dim: recorded in vectors/meta.json
        assert reader.vectors.dim == 8
        assert reader.vectors.search(vec[0], 1)[0].chunk_id == chunk.chunk_id
        assert reader.keywords.search("runs", 1)[0].chunk_id == chunk.chunk_id
        reader.close()
    assert {p.name for p in (tmp_path / "home").iterdir()} >= {"LOCK", "meta.sqlite", "vectors", "bm25",
                                                               "blobs", "graph.sqlite"}


def test_second_writer_is_locked_out_until_the_first_closes(tmp_path: Path) -> None:
    s = settings(tmp_path / "home")
    first = open_stores(s, "write", dim=4)
    with pytest.raises(IndexLocked, match="another process"):
        open_stores(s, "write", dim=4)
    open_stores(s, "read").close()  # readers take no lock
    first.close()
    open_stores(s, "write", dim=4).close()


def test_dim_of_another_model_is_refused(tmp_path: Path) -> None:
    s = settings(tmp_path / "home")
    open_stores(s, "write", dim=4, model="m1").close()
    with pytest.raises(StoreError, match="another model"):
        open_stores(s, "write", dim=8, model="m2")
    open_stores(s, "write", dim=4).close()  # the failed open released the lock


@pytest.mark.parametrize("mode", ["read", "write"])
def test_a_model_of_the_same_dim_is_refused_naming_both(tmp_path: Path, mode: str) -> None:
    s = settings(tmp_path / "home")
    open_stores(s, "write", dim=384, model="onnx-int8/all-MiniLM-L6-v2").close()
    with pytest.raises(StoreError, match="another model") as refused:
        open_stores(s, mode, dim=384, model="st-fp32/BAAI/bge-small-en-v1.5")
    assert str(refused.value).endswith("re-ingest into a new home")
    assert "index built with onnx-int8/all-MiniLM-L6-v2 (384-d); the configured embedder is " \
        "st-fp32/BAAI/bge-small-en-v1.5 (384-d)" in str(refused.value)
    open_stores(s, "write", dim=384, model="onnx-int8/all-MiniLM-L6-v2").close()  # the lock was released
    open_stores(s, "read", dim=None).close()  # a reader that does not know the embedder is not checked


@pytest.mark.parametrize("mode", ["read", "write"])
def test_the_same_model_in_another_runtime_or_precision_is_accepted(tmp_path: Path, mode: str) -> None:
    s = settings(tmp_path / "home")
    open_stores(s, "write", dim=384, model="onnx-int8/all-MiniLM-L6-v2").close()
    for other in ("onnx-fp32/all-MiniLM-L6-v2", "st-fp32/all-MiniLM-L6-v2"):
        open_stores(s, mode, dim=384, model=other).close()


def test_reading_a_missing_home_and_unknown_schemes(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no index"):
        open_stores(settings(tmp_path / "nothing"), "read")
    with pytest.raises(ConfigError, match="stores.vectors"):
        open_stores(settings(tmp_path / "home", vectors="nosuch://host/db"), "write", dim=4)


def test_one_batch_written_by_four_threads(tmp_path: Path) -> None:
    """The pipeline's write step: stores opened here, written concurrently from worker threads."""
    from concurrent.futures import ThreadPoolExecutor

    from fanrag.ids import document_id

    uri = "file:///x.txt"
    doc = Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash="h", text="t", title="T")
    chunks = [Chunk.make(doc.doc_id, i, f"entity BRCA{i} text {i}", char_start=0, char_end=1,
                         entities=((f"brca{i}", "SYMBOL"),)) for i in range(64)]
    vecs = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    with open_stores(settings(tmp_path / "home"), "write", dim=8) as stores:
        stores.meta.mark_pending([doc])
        for store in (stores.vectors, stores.keywords, stores.graph):
            store.delete_documents([doc.doc_id])
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(stores.vectors.add, chunks, vecs), pool.submit(stores.keywords.add, chunks),
                       pool.submit(stores.graph.add, chunks), pool.submit(stores.blobs.put, b"raw bytes")]
            key = [f.result() for f in futures][-1]
        stores.meta.commit([doc], chunks, {doc.doc_id: key})
        assert stores.vectors.count() == stores.keywords.count() == 64
        assert stores.graph.stats()["chunks"] == 64
        assert len(stores.meta.get_chunks([c.chunk_id for c in chunks])) == 64
        assert stores.blobs.get(stores.meta.get_document(doc.doc_id).blob_key) == b"raw bytes"


def test_writer_lock_holds_across_processes(tmp_path: Path) -> None:
    import subprocess
    import sys

    home = tmp_path / "home"
    script = ("import sys\nfrom fanrag.settings import Settings\nfrom fanrag.stores import open_stores\n"
              f"s = open_stores(Settings(home={str(home)!r}), 'write', dim=4)\nprint('open', flush=True)\n"
              "sys.stdin.read()\ns.close()\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(IndexLocked, match=f"pid {holder.pid}"):
            open_stores(settings(home), "write", dim=4)
        open_stores(settings(home), "read").close()
    finally:
        holder.communicate("", timeout=60)
    open_stores(settings(home), "write", dim=4).close()
