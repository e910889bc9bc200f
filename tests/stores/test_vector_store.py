"""VectorStore contract (every backend) and the HNSW store's durability and reader behaviour."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanrag.errors import StoreError
from fanrag.stores.base import VectorStore
from fanrag.types import Chunk


def make_chunks(doc_id: str, n: int) -> list[Chunk]:
    return [Chunk.make(doc_id, i, f"{doc_id} part {i}", char_start=0, char_end=1) for i in range(n)]


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    return [ids[i] for i in np.argsort(-(vectors @ query))[:k]]


# contract ---------------------------------------------------------------------------------------------------
def test_is_a_vector_store(open_vectors) -> None:
    store = open_vectors()
    assert isinstance(store, VectorStore)
    assert store.n_shards == 2 and store.dim == 16


def test_add_then_search_finds_each_vector_first(open_vectors) -> None:
    store = open_vectors()
    chunks, vecs = make_chunks("d1", 50), unit_vectors(50, 16)
    store.add(chunks, vecs)
    assert store.count() == 50
    for i in (0, 17, 49):
        hits = store.search(vecs[i], k=5)
        assert hits[0].chunk_id == chunks[i].chunk_id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_readding_same_ids_keeps_one_copy_and_updates_vector(open_vectors) -> None:
    store = open_vectors()
    chunks = make_chunks("d1", 20)
    store.add(chunks, unit_vectors(20, 16, seed=1))
    new = unit_vectors(20, 16, seed=2)
    store.add(chunks, new)
    assert store.count() == 20
    hits = store.search(new[3], k=20)
    assert hits[0].chunk_id == chunks[3].chunk_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert len({h.chunk_id for h in hits}) == len(hits) == 20


def test_delete_documents_removes_only_those(open_vectors) -> None:
    store = open_vectors()
    a, b = make_chunks("da", 10), make_chunks("db", 10)
    vecs = unit_vectors(20, 16)
    store.add(a + b, vecs)
    assert store.delete_documents(["da", "absent"]) == 10
    assert store.delete_documents(["da"]) == 0
    assert store.count() == 10
    found = {h.chunk_id for h in store.search(vecs[0], k=20)}
    assert found == {c.chunk_id for c in b}


def test_readd_after_delete_is_found_again(open_vectors) -> None:
    store = open_vectors()
    chunks, vecs = make_chunks("d1", 8), unit_vectors(8, 16)
    store.add(chunks, vecs)
    store.delete_documents(["d1"])
    store.add(chunks, vecs)
    assert store.count() == 8
    assert store.search(vecs[5], k=1)[0].chunk_id == chunks[5].chunk_id


def test_wrong_shape_is_rejected(open_vectors) -> None:
    store = open_vectors()
    with pytest.raises(StoreError, match="shape"):
        store.add(make_chunks("d", 2), unit_vectors(2, 8))


def test_shard_merge_equals_brute_force_on_small_data(open_vectors) -> None:
    store = open_vectors(shards=3)
    chunks, vecs = make_chunks("d", 300), unit_vectors(300, 16, seed=3)
    store.add(chunks, vecs)
    ids = [c.chunk_id for c in chunks]
    for q in unit_vectors(10, 16, seed=4):
        assert [h.chunk_id for h in store.search(q, k=10)] == brute_force(vecs, ids, q, 10)
        per_shard = sorted((h for s in range(3) for h in store.search_shard(s, q, 10)), key=lambda h: -h.score)
        assert [h.chunk_id for h in per_shard[:10]] == brute_force(vecs, ids, q, 10)


def test_recall_at_10_on_clustered_vectors(open_vectors) -> None:
    rng = np.random.default_rng(5)
    dim, n = 32, 5000
    centres = rng.standard_normal((50, dim))
    x = (centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    store = open_vectors(dim=dim, shards=4, ef_construction=100, ef_search=64)
    chunks = make_chunks("d", n)
    for i in range(0, n, 1000):  # several batches: exercises capacity growth
        store.add(chunks[i:i + 1000], x[i:i + 1000])
    ids = [c.chunk_id for c in chunks]
    queries = x[rng.integers(0, n, 100)] + 0.05 * rng.standard_normal((100, dim)).astype(np.float32)
    recall = np.mean([len({h.chunk_id for h in store.search(q / np.linalg.norm(q), 10)}
                          & set(brute_force(x, ids, q, 10))) / 10 for q in queries])
    assert recall >= 0.95


# durability -------------------------------------------------------------------------------------------------
def test_reopen_without_flush_replays_the_log(open_vectors) -> None:
    first = open_vectors()
    chunks, vecs = make_chunks("d1", 30), unit_vectors(30, 16)
    first.add(chunks, vecs)
    first.delete_documents(["nothing"])
    second = open_vectors()  # the first never flushed: everything comes from log.sqlite
    assert second.count() == 30
    assert second.search(vecs[7], k=1)[0].chunk_id == chunks[7].chunk_id


def test_checkpoint_then_more_writes_survive_reopen(open_vectors) -> None:
    first = open_vectors(checkpoint_every=25)
    chunks, vecs = make_chunks("d1", 60), unit_vectors(60, 16)
    for i in range(0, 60, 10):
        first.add(chunks[i:i + 10], vecs[i:i + 10])
    first.delete_documents(["d1"])
    first.add(chunks[:5], vecs[:5])
    second = open_vectors()
    assert second.count() == 5
    assert {h.chunk_id for h in second.search(vecs[0], k=60)} == {c.chunk_id for c in chunks[:5]}


def test_dim_mismatch_says_another_model(open_vectors) -> None:
    open_vectors(dim=16).close()
    with pytest.raises(StoreError, match="another model"):
        open_vectors(dim=32)
    assert open_vectors(dim=None).dim == 16  # a reader takes the recorded dim


_KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    from fanrag.stores.vectors_hnsw import ShardedHnswStore
    from fanrag.types import Chunk

    store = ShardedHnswStore(sys.argv[1], 16, shards=2, ef_construction=50, checkpoint_every=40)
    rng = np.random.default_rng(0)
    for batch in range(7):
        chunks = [Chunk.make(f"doc{batch}", i, f"b{batch} c{i}", char_start=0, char_end=1) for i in range(15)]
        vecs = rng.standard_normal((15, 16)).astype(np.float32)
        store.add(chunks, vecs / np.linalg.norm(vecs, axis=1, keepdims=True))
        if batch == 3:
            store.delete_documents(["doc1"])
        print("returned", batch, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close
""")


def test_sigkill_after_add_returned_loses_nothing(tmp_path: Path) -> None:
    from fanrag.stores.vectors_hnsw import ShardedHnswStore

    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path / "v")], check=False,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split("\n").count("returned 6") == 1
    store = ShardedHnswStore(tmp_path / "v", 16, shards=2)
    try:
        assert store.count() == 7 * 15 - 15  # doc1 deleted
        rng = np.random.default_rng(0)
        for batch in range(7):
            vecs = rng.standard_normal((15, 16)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            top = store.search(vecs[4], k=1)
            if batch == 1:
                assert not top or top[0].score < 0.999
            else:
                assert top[0].chunk_id == Chunk.make(f"doc{batch}", 4, f"b{batch} c4", char_start=0,
                                                     char_end=1).chunk_id
    finally:
        store.close()


# a reader next to a writer ------------------------------------------------------------------------------------
def test_reader_sees_writer_commits_and_checkpoints(open_vectors) -> None:
    writer = open_vectors(checkpoint_every=1_000_000)
    chunks, vecs = make_chunks("d1", 40), unit_vectors(40, 16)
    writer.add(chunks[:10], vecs[:10])
    reader = open_vectors(dim=None, read_only=True)
    assert reader.count() == 10
    writer.add(chunks[10:20], vecs[10:20])
    assert reader.search(vecs[15], k=1)[0].chunk_id == chunks[15].chunk_id  # replayed from the log
    writer.add(chunks[20:30], vecs[20:30])
    writer.flush()  # checkpoint + compaction: the log rows the reader has not applied are gone
    writer.add(chunks[30:40], vecs[30:40])
    writer.delete_documents(["nothing"])
    assert reader.search(vecs[25], k=1)[0].chunk_id == chunks[25].chunk_id  # reloaded the shards
    assert reader.search(vecs[33], k=1)[0].chunk_id == chunks[33].chunk_id  # and replayed after them
    writer.delete_documents(["d1"])
    assert reader.search(vecs[33], k=5) == []
    with pytest.raises(StoreError, match="read-only"):
        reader.add(chunks[:1], vecs[:1])


def test_reader_needs_an_index(tmp_path: Path) -> None:
    from fanrag.stores.vectors_hnsw import ShardedHnswStore

    with pytest.raises(StoreError, match="no vector index"):
        ShardedHnswStore(tmp_path / "none", None, read_only=True)
    assert not os.path.exists(tmp_path / "none")


# any sequence of writes, checkpoints and crashes ends in the state the writes describe -----------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "delete", "flush", "reopen"]), st.integers(0, 4),
                              st.integers(0, 3)), min_size=1, max_size=12))
def test_log_replay_matches_the_writes(tmp_path_factory: pytest.TempPathFactory, ops) -> None:
    from fanrag.stores.vectors_hnsw import ShardedHnswStore

    path = tmp_path_factory.mktemp("v")
    store = ShardedHnswStore(path, 8, shards=2, ef_construction=50, checkpoint_every=7)
    expected: dict[str, np.ndarray] = {}
    for step, (op, doc, version) in enumerate(ops):
        doc_id = f"d{doc}"
        if op == "add":
            chunks, vecs = make_chunks(doc_id, 3), unit_vectors(3, 8, seed=step)
            store.add(chunks, vecs)
            expected.update((c.chunk_id, v) for c, v in zip(chunks, vecs, strict=True))
        elif op == "delete":
            store.delete_documents([doc_id])
            expected = {cid: v for cid, v in expected.items() if not cid.startswith(doc_id + "-")}
        elif op == "flush":
            store.flush()
        else:  # a crash: drop the object without flush or close, open a new one
            store = ShardedHnswStore(path, 8, shards=2, ef_construction=50, checkpoint_every=7)
    fresh = ShardedHnswStore(path, None, read_only=True)
    for s in (store, fresh):
        assert s.count() == len(expected)
        for vec in expected.values():
            top = s.search(vec, k=1)[0]
            assert top.score == pytest.approx(1.0, abs=1e-4) and np.allclose(vec, expected[top.chunk_id])
    store.close()
