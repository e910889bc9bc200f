"""The Redis write buffer in front of a vector store (fanrag.stores.buffer), against a real Redis and
the real inner stores: the embedded sharded HNSW, and pgvector where several writer processes share it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fanrag.errors import ConfigError, StoreError
from fanrag.stores.buffer import BufferConfig, BufferedVectorStore
from fanrag.stores.vectors_hnsw import ShardedHnswStore
from fanrag.types import Chunk
from tests.servers.redis import redis_server, start_redis  # noqa: F401 - the session fixture

pytest.importorskip("redis", reason="the vector buffer needs: pip install 'fanrag[redis]'")

DIM = 8
WAIT_S = 30.0  # a safety net for a stuck flush, not a speed requirement


def chunks_for(doc: str, n: int) -> list[Chunk]:
    return [Chunk(chunk_id=f"{doc}-c{i}", doc_id=doc, position=i, text="", char_start=0, char_end=0)
            for i in range(n)]


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Recording:
    """The inner store, with every add/delete it receives recorded (to see the batches a flush makes)."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.adds, self.deletes = inner, [], []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def add(self, chunks: Any, vectors: np.ndarray) -> None:
        self.adds.append(len(chunks))
        self.inner.add(chunks, vectors)

    def delete_documents(self, doc_ids: Any) -> int:
        self.deletes.append(sorted(doc_ids))
        return self.inner.delete_documents(doc_ids)


@pytest.fixture
def buffer_url(redis_server: str) -> str:  # noqa: F811
    return f"{redis_server}?key=t-vbuf-{uuid.uuid4().hex[:8]}&flush_batch=10&flush_age=30"


@pytest.fixture
def open_buffered(tmp_path: Path) -> Iterator[Callable[..., BufferedVectorStore]]:
    opened: list[BufferedVectorStore] = []

    def factory(url: str, *, background: bool = False) -> BufferedVectorStore:
        inner = Recording(ShardedHnswStore(tmp_path / "vectors", DIM, shards=2, ef_construction=50))
        store = BufferedVectorStore(inner, BufferConfig.from_url(url), background=background)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield factory
    for store in opened:
        if not getattr(store.inner.inner, "_closed", False):
            store.close()


def test_writes_wait_in_redis_until_a_flush_then_are_searchable(open_buffered, buffer_url: str) -> None:
    store = open_buffered(buffer_url)
    rng = np.random.default_rng(0)
    vecs = unit(rng, 3)
    store.add(chunks_for("a", 3), vecs)
    assert (store.pending(), store.count(), store.inner.adds) == (1, 0, [])
    assert int(store._redis.get(store._count_key)) == 3  # vectors buffered (XLEN counts operations)
    store.flush()
    assert (store.pending(), store.count(), int(store._redis.get(store._count_key))) == (0, 3, 0)
    assert store.search(vecs[1], 1)[0].chunk_id == "a-c1"


def test_size_flushes_apply_batches_of_at_most_flush_batch(open_buffered, buffer_url: str) -> None:
    store = open_buffered(buffer_url)  # flush_batch=10
    rng = np.random.default_rng(1)
    for d in range(8):
        store.add(chunks_for(f"d{d}", 3), unit(rng, 3))
    # Writers add 3 at a time; the inner store sees 9-vector upserts (whole entries, ≤ flush_batch).
    assert store.inner.adds and all(n <= 10 for n in store.inner.adds)
    assert store.inner.adds[0] == 9
    store.flush()
    assert sum(store.inner.adds) == store.count() == 24
    assert len(store.inner.adds) < 8  # fewer, bigger writes than the writers made


def test_age_flushes_happen_in_the_background(open_buffered, redis_server: str) -> None:  # noqa: F811
    url = f"{redis_server}?key=t-vbuf-{uuid.uuid4().hex[:8]}&flush_batch=1000&flush_age=0.2"
    store = open_buffered(url, background=True)
    store.add(chunks_for("a", 2), unit(np.random.default_rng(2), 2))
    deadline = time.monotonic() + WAIT_S
    while store.count() < 2 or store.pending():  # applied, then removed from the buffer
        assert time.monotonic() < deadline, "the background flush never ran"
        time.sleep(0.05)
    assert store.flushes >= 1


def test_deletes_and_replacements_keep_their_order(open_buffered, buffer_url: str) -> None:
    store = open_buffered(buffer_url.replace("flush_batch=10", "flush_batch=1000"))
    rng = np.random.default_rng(3)
    old, new = unit(rng, 2), unit(rng, 2)
    store.add(chunks_for("a", 2), old)       # a v1
    store.add(chunks_for("b", 2), unit(rng, 2))
    store.delete_documents(["a"])            # re-ingest of a: delete, then write v2
    store.add(chunks_for("a", 2), new)
    store.delete_documents(["b"])            # b removed for good
    store.add(chunks_for("c", 1), unit(rng, 1))
    store.delete_documents(["c"])            # c added then deleted within one flush window
    store.flush()
    assert store.count() == 2
    hit = store.search(new[0], 1)[0]
    assert hit.chunk_id == "a-c0" and hit.score == pytest.approx(1.0, abs=1e-4)
    assert store.search(old[0], 2)[0].score < 0.999  # the old vector of a is gone


def test_a_crash_between_apply_and_delete_reapplies_without_duplicates(open_buffered, buffer_url: str) -> None:
    store = open_buffered(buffer_url.replace("flush_batch=10", "flush_batch=1000"))
    rng = np.random.default_rng(4)
    store.add(chunks_for("a", 4), unit(rng, 4))
    store.delete_documents(["zzz"])
    real_remove = store._remove
    store._remove = lambda *a: (_ for _ in ()).throw(ConnectionError("killed before XDEL"))  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        store.flush_once(force=True)
    assert store.count() == 4 and store.pending() == 2  # applied, but still buffered
    store._remove = real_remove  # type: ignore[method-assign]
    store._redis.delete(store._lock_key)  # the crashed flusher's lock would expire after lock_ttl
    store.flush()
    assert store.count() == 4 and store.pending() == 0


_WRITER = """
import sys, numpy as np
from fanrag.stores.buffer import BufferConfig, BufferedVectorStore
from fanrag.stores.vectors_pgvector import PgVectorStore
from fanrag.types import Chunk
dsn, url, name, n, kill = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "kill"
store = BufferedVectorStore(PgVectorStore(dsn, 8, shards=2), BufferConfig.from_url(url), background=False)
rng = np.random.default_rng(abs(hash(name)) % 1000)
for d in range(n):
    v = rng.normal(size=(3, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    store.add([Chunk(f"{name}{d}-c{i}", f"{name}{d}", i, "", 0, 0) for i in range(3)], v)
print("added", flush=True)
if kill:
    import os, signal
    os.kill(os.getpid(), signal.SIGKILL)  # no flush, no close: what is buffered must survive
store.close()
"""


def _writer(dsn: str, url: str, name: str, n: int, kill: bool = False) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", _WRITER, dsn, url, name, str(n), "kill" if kill else ""],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})


def _pg_store(dsn: str) -> Any:
    from fanrag.stores.vectors_pgvector import PgVectorStore

    return PgVectorStore(dsn, DIM, shards=2)


def test_writer_processes_share_one_buffer_into_pgvector(pg_database: str, buffer_url: str) -> None:
    procs = [_writer(pg_database, buffer_url, name, 20) for name in ("p", "q", "r")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    store = _pg_store(pg_database)
    try:
        assert store.count() == 3 * 20 * 3
    finally:
        store.close()


def test_a_killed_writer_loses_nothing_that_add_returned(pg_database: str, buffer_url: str) -> None:
    url = buffer_url.replace("flush_batch=10", "flush_batch=100000")  # nothing flushes before the kill
    proc = _writer(pg_database, url, "k", 10, kill=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -9 and b"added" in out, err.decode()
    store = BufferedVectorStore(_pg_store(pg_database), BufferConfig.from_url(url), background=False)
    try:
        assert store.count() == 0 and store.pending() == 10
        store.flush()
        assert store.count() == 30 and store.pending() == 0
    finally:
        store.close()


def test_engine_ingest_through_the_buffer_survives_a_redis_restart(tmp_path: Path) -> None:
    from fanrag.engine import Engine
    from tests.conftest import make_settings
    from tests.stores.test_pg_engine import TOPICS, write_corpus

    redis = start_redis(tmp_path / "redis")  # private, with AOF: its data outlives the restart
    try:
        corpus = write_corpus(tmp_path / "corpus", copies=3)
        url = f"{redis.url}?key=vbuf&flush_batch=4&flush_age=30"
        settings = make_settings(tmp_path / "home", stores={"vector_buffer": url}, pipeline={"write_batch": 3})
        with Engine.open(settings=settings) as engine:
            vectors = engine.stores.vectors
            assert isinstance(vectors, BufferedVectorStore)
            calls = _restart_on_nth_add(vectors, redis, nth=2)
            summary = engine.ingest([corpus])
            assert calls[0] > 2, "the ingest wrote too few batches to meet the outage"
            assert summary.failed == [] and summary.ok == len(TOPICS) * 3
            assert vectors.pending() == 0  # the end of the run flushed everything
            info = engine.status()
            assert info.vectors == info.chunks == info.keyword_chunks == len(TOPICS) * 3
            result = asyncio.run(engine.retriever.aretrieve("what stops helium nuclei?", branches=["dense"]))
            assert result.hits and "helium" in result.hits[0].text.lower()
    finally:
        redis.stop()


def _restart_on_nth_add(store: BufferedVectorStore, redis: Any, nth: int) -> list[int]:
    """On the nth add, Redis goes down for a second: the pipeline retries the whole batch."""
    real, calls = store.add, [0]

    def add(chunks: Any, vectors: np.ndarray) -> None:
        calls[0] += 1
        if calls[0] == nth:
            redis.stop()
            import threading

            threading.Timer(1.0, redis.start).start()
        real(chunks, vectors)
    store.add = add  # type: ignore[method-assign]
    return calls


def test_bad_buffer_urls_name_the_setting() -> None:
    for url in ("http://x", "redis://h?flush_batch=0", "redis://h?flush_age=-1", "redis://h?flush_batch=x"):
        with pytest.raises(ConfigError, match="stores.vector_buffer"):
            BufferConfig.from_url(url)


def test_an_unreachable_buffer_is_a_store_error(tmp_path: Path) -> None:
    from tests.servers.redis import free_port

    inner = ShardedHnswStore(tmp_path / "v", DIM, shards=1)
    store = BufferedVectorStore(inner, BufferConfig.from_url(f"redis://127.0.0.1:{free_port()}/0"), background=False)
    with pytest.raises(StoreError, match="vector buffer: redis XADD"):
        store.add(chunks_for("a", 1), unit(np.random.default_rng(5), 1))
    inner.close()
    store._redis.close()


def test_readers_bypass_the_buffer(tmp_path: Path, buffer_url: str) -> None:
    from fanrag.stores import open_stores
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "home", stores={"vector_buffer": buffer_url})
    with open_stores(settings, dim=DIM) as stores:
        assert isinstance(stores.vectors, BufferedVectorStore)
    with open_stores(settings, mode="read") as stores:
        assert isinstance(stores.vectors, ShardedHnswStore)


class _Failing(Recording):
    """An inner store that is down until ``up`` is set."""

    up = False

    def add(self, chunks: Any, vectors: np.ndarray) -> None:
        if not self.up:
            raise StoreError("inner store down")
        super().add(chunks, vectors)


def test_a_failing_inner_store_does_not_fail_the_write_that_triggered_a_flush(tmp_path: Path, buffer_url: str) -> None:
    inner = _Failing(ShardedHnswStore(tmp_path / "v", DIM, shards=1))
    store = BufferedVectorStore(inner, BufferConfig.from_url(buffer_url.replace("flush_batch=10", "flush_batch=1")),
                                background=False)  # type: ignore[arg-type]
    try:
        store.add(chunks_for("a", 2), unit(np.random.default_rng(6), 2))  # due at once; the flush fails quietly
        assert store.pending() == 1 and inner.count() == 0
        inner.up = True
        store.flush()
        assert store.pending() == 0 and inner.count() == 2
    finally:
        store.close()


def test_flush_applies_what_was_buffered_without_waiting_for_later_writers(open_buffered, buffer_url: str) -> None:
    import threading

    url = buffer_url.replace("flush_batch=10", "flush_batch=1000") + "&lock_ttl=2"
    store = open_buffered(url)
    store.add(chunks_for("mine", 3), unit(np.random.default_rng(7), 3))
    other = BufferedVectorStore(ShardedHnswStore(store.inner.inner.path.parent / "other", DIM, shards=1),
                                BufferConfig.from_url(url), background=False)
    done = threading.Event()

    def keep_writing() -> None:  # another worker appending all along
        i = 0
        while not done.is_set():
            other._append({"op": "del", "docs": json.dumps([f"x{i}"])}, 0)
            i += 1
            time.sleep(0.005)
    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        store.flush()  # would spin until lock_ttl and give up if it waited for an empty stream
    finally:
        done.set()
        writer.join()
        other.inner.close()
        other._redis.close()
    assert store.count() == 3


def test_a_flusher_that_lost_its_lock_stops_and_leaves_the_entries(open_buffered, buffer_url: str) -> None:
    store = open_buffered(buffer_url.replace("flush_batch=10", "flush_batch=1000"))
    store.add(chunks_for("a", 2), unit(np.random.default_rng(9), 2))
    real_add = store.inner.add

    def slow_add(chunks: Any, vectors: np.ndarray) -> None:
        store._redis.set(store._lock_key, "someone-else")  # our lock expired and another flusher took it
        real_add(chunks, vectors)
    store.inner.add = slow_add
    with pytest.raises(StoreError, match="lost the flush lock"):
        store.flush_once(force=True)
    assert store.pending() == 1  # not removed: the new lock holder applies it again, in order
    store.inner.add = real_add
    store._redis.delete(store._lock_key)
    store.flush()
    assert (store.pending(), store.count()) == (0, 2)


def test_each_index_gets_its_own_buffer_stream_by_default(tmp_path: Path, redis_server: str) -> None:  # noqa: F811
    from fanrag.stores import open_stores
    from tests.conftest import make_settings

    keys = []
    for name in ("a", "b"):
        with open_stores(make_settings(tmp_path / name, stores={"vector_buffer": redis_server}), dim=DIM) as stores:
            keys.append(stores.vectors.config.key)
    assert keys[0] != keys[1] and all(k.startswith("fanrag:vbuf:") for k in keys)


def test_flush_reports_entries_it_could_not_apply(open_buffered, buffer_url: str) -> None:
    store = open_buffered(buffer_url.replace("flush_batch=10", "flush_batch=1000") + "&lock_ttl=0.3")
    store.add(chunks_for("a", 1), unit(np.random.default_rng(10), 1))
    store._redis.set(store._lock_key, "a-stuck-flusher", px=60_000)
    with pytest.raises(StoreError, match="still not applied"):
        store.flush()
    store._redis.delete(store._lock_key)
