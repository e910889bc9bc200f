"""The shipped VectorStore contract on every backend, and what is fanrag's own: the HNSW store's durability
and log replay, labels that collide."""

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
from fanrag.testing.stores import StoreOpener, VectorStoreContract, make_chunks, unit_vectors
from fanrag.types import Chunk


class TestVectorStoreContract(VectorStoreContract):
    """Run against the embedded HNSW store and pgvector (see conftest.py)."""


# 64-bit labels that collide ----------------------------------------------------------------------------------
@pytest.fixture
def colliding_labels(monkeypatch: pytest.MonkeyPatch) -> list[Chunk]:
    """Two chunks of two documents whose vector labels are equal (a 63-bit hash collision, forced)."""
    from fanrag.ids import vector_label
    from fanrag.stores import vectors_hnsw, vectors_pgvector

    a, b = make_chunks("da", 1)[0], make_chunks("db", 1)[0]

    def label(chunk_id: str) -> int:
        return vector_label(a.chunk_id if chunk_id == b.chunk_id else chunk_id)

    for module in (vectors_hnsw, vectors_pgvector):
        monkeypatch.setattr(module, "vector_label", label)
    return [a, b]


@pytest.mark.parametrize("one_call", [False, True], ids=["two-calls", "one-call"])
def test_a_label_collision_keeps_both_vectors(open_vectors: StoreOpener, colliding_labels: list[Chunk],
                                              one_call: bool) -> None:
    a, b = colliding_labels
    va, vb = unit_vectors(2, 16, seed=9)
    store = open_vectors()
    if one_call:
        store.add([a, b], np.stack([va, vb]))
    else:
        store.add([a], va[None])
        store.add([b], vb[None])

    def found(s: object) -> list[str]:
        return [s.search(v, k=1)[0].chunk_id for v in (va, vb)]  # type: ignore[attr-defined]

    assert store.count() == 2 and found(store) == [a.chunk_id, b.chunk_id]
    store.add([b], vb[None])  # a re-add finds the label b was given: still one copy each
    assert store.count() == 2 and found(open_vectors(dim=None, read_only=True)) == [a.chunk_id, b.chunk_id]
    store.flush()  # a reader opened now loads the checkpointed shards instead of replaying the log
    assert found(open_vectors(dim=None, read_only=True)) == [a.chunk_id, b.chunk_id]
    assert store.delete_documents(["da"]) == 1
    assert [h.chunk_id for h in store.search(vb, k=2)] == [b.chunk_id]
    store.add([a], va[None])  # a takes its own label again; b keeps the one it was given
    store.add([b], vb[None])
    assert store.count() == 2 and found(store) == [a.chunk_id, b.chunk_id]
    assert store.delete_documents(["db"]) == 1 and store.delete_documents(["da"]) == 1
    assert store.count() == 0


# durability -------------------------------------------------------------------------------------------------
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


def test_reader_needs_an_index_and_creates_nothing(tmp_path: Path) -> None:
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
