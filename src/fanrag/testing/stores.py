"""The store contract suite: the tests every backend of a store kind passes, shipped so that a backend
registered with ``register_backend`` (fanrag's own, or a third party's) can prove itself.

One class per kind: ``MetaStoreContract``, ``VectorStoreContract``, ``KeywordStoreContract``,
``BlobStoreContract``, ``GraphStoreContract``. Subclass one in a test module and give it a single
fixture, ``store_settings``: Settings whose ``stores.<kind>`` URL names the backend, on a location that
is empty for each test (an embedded backend lives under ``settings.home``, a fresh ``tmp_path``):

    import pytest
    from fanrag.settings import Settings
    from fanrag.stores import register_backend
    from fanrag.testing.stores import BlobStoreContract

    register_backend("blobs", "mem", "my_package.blobs:MemoryBlobStore")

    class TestMemoryBlobs(BlobStoreContract):
        @pytest.fixture
        def store_settings(self, tmp_path):
            return Settings(home=tmp_path).replace(stores={"blobs": "mem://test"})

The suite opens stores the way ``open_stores`` does (through the backend registry, with an
``OpenContext``), so it checks the registration as well; every store a test opens is closed after it,
and ``close()`` may be called twice. A test that reopens a store expects to see what was written
before. For pytest's detailed assertion messages, call ``pytest.register_assert_rewrite("fanrag.testing")``
in a conftest.py before this module is imported. Needs pytest and numpy; ``import fanrag`` never imports it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pytest

from ..errors import StoreError
from ..ids import document_id
from ..settings import Settings
from ..stores.base import (
    BlobStore,
    CachedVector,
    GraphStore,
    KeywordStore,
    MetaStore,
    SourceRecord,
    VectorStore,
)
from ..stores.factory import OpenContext, open_backend
from ..types import Chunk, Document

__all__ = [
    "BlobStoreContract", "GraphStoreContract", "KeywordStoreContract", "MetaStoreContract", "StoreContract",
    "StoreOpener", "VectorStoreContract",
]


class StoreOpener:
    """``opener(read_only=False, **options)``: a store of one kind at the location ``settings`` names,
    opened through the backend registry. ``options`` (vectors only): ``dim`` and ``model`` (the
    embedder's) and fields of ``settings.hnsw`` (``shards``, ``ef_search``, ...); ``defaults`` fill
    what a call leaves out. ``close()`` (or leaving ``with``) closes every store it opened."""

    def __init__(self, settings: Settings, kind: str, **defaults: Any) -> None:
        self.settings = settings
        self.kind = kind
        self.defaults = defaults
        self._opened: list[Any] = []

    def __call__(self, *, read_only: bool = False, **options: Any) -> Any:
        options = {**self.defaults, **options}
        dim, model = options.pop("dim", None), options.pop("model", "")
        settings = self.settings.replace(hnsw=options) if options else self.settings
        if not read_only:  # as open_stores does for a writer
            settings.home.mkdir(parents=True, exist_ok=True)
        ctx = OpenContext(settings=settings, read_only=read_only, dim=dim, model=model)
        store = open_backend(self.kind, getattr(settings.stores, self.kind), ctx)
        self._opened.append(store)
        return store

    def close(self) -> None:
        while self._opened:
            self._opened.pop().close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StoreContract:
    """What every contract shares: its store ``kind`` and the ``open_store`` fixture, a StoreOpener on
    the ``store_settings`` fixture that the subclass (or a conftest.py) provides."""

    kind: ClassVar[str]
    protocol: ClassVar[type]  # the store Protocol of ``kind``
    defaults: ClassVar[dict[str, Any]] = {}

    @pytest.fixture
    def open_store(self, store_settings: Settings) -> Iterator[StoreOpener]:
        with StoreOpener(store_settings, self.kind, **self.defaults) as opener:
            yield opener

    @pytest.fixture
    def store(self, open_store: StoreOpener) -> Any:
        """A store opened for writing, with the defaults."""
        return open_store()

    def test_implements_the_protocol(self, store: Any) -> None:
        assert isinstance(store, self.protocol)

    def test_close_twice_is_harmless(self, open_store: StoreOpener) -> None:
        store = open_store()
        store.close()
        store.close()


# vectors ------------------------------------------------------------------------------------------------------
def make_chunks(doc_id: str, n: int) -> list[Chunk]:
    return [Chunk.make(doc_id, i, f"{doc_id} part {i}", char_start=0, char_end=1) for i in range(n)]


def unit_vectors(n: int, dim: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    """``n`` unit vectors around 50 random centres: neighbourhoods like real embeddings have."""
    centres = rng.standard_normal((50, dim))
    x = (centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, ids: list[str], query: np.ndarray, k: int) -> list[str]:
    return [ids[i] for i in np.argsort(-(vectors @ query))[:k]]


class VectorStoreContract(StoreContract):
    """VectorStore: exact top-k on small data, idempotent upserts, deletes by document, shards, readers,
    reopening, and the embedder check (another dim or model is refused, to read or to write)."""

    kind = "vectors"
    protocol = VectorStore
    defaults: ClassVar[dict[str, Any]] = {"dim": 16, "shards": 2, "ef_construction": 100, "ef_search": 64}

    def test_has_the_shards_and_dim_it_was_built_with(self, store: Any) -> None:
        assert store.n_shards == 2 and store.dim == 16

    def test_add_then_search_finds_each_vector_first(self, open_store: StoreOpener) -> None:
        store = open_store()
        chunks, vecs = make_chunks("d1", 50), unit_vectors(50, 16)
        store.add(chunks, vecs)
        assert store.count() == 50
        for i in (0, 17, 49):
            hits = store.search(vecs[i], k=5)
            assert hits[0].chunk_id == chunks[i].chunk_id
            assert hits[0].score == pytest.approx(1.0, abs=1e-4)
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    def test_readding_same_ids_keeps_one_copy_and_updates_vector(self, open_store: StoreOpener) -> None:
        store = open_store()
        chunks = make_chunks("d1", 20)
        store.add(chunks, unit_vectors(20, 16, seed=1))
        new = unit_vectors(20, 16, seed=2)
        store.add(chunks, new)
        assert store.count() == 20
        hits = store.search(new[3], k=20)
        assert hits[0].chunk_id == chunks[3].chunk_id and hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert len({h.chunk_id for h in hits}) == len(hits) == 20

    def test_delete_documents_removes_only_those(self, open_store: StoreOpener) -> None:
        store = open_store()
        a, b = make_chunks("da", 10), make_chunks("db", 10)
        vecs = unit_vectors(20, 16)
        store.add(a + b, vecs)
        assert store.delete_documents(["da", "absent"]) == 10
        assert store.delete_documents(["da"]) == 0
        assert store.count() == 10
        found = {h.chunk_id for h in store.search(vecs[0], k=20)}
        assert found == {c.chunk_id for c in b}

    def test_readd_after_delete_is_found_again(self, open_store: StoreOpener) -> None:
        store = open_store()
        chunks, vecs = make_chunks("d1", 8), unit_vectors(8, 16)
        store.add(chunks, vecs)
        store.delete_documents(["d1"])
        store.add(chunks, vecs)
        assert store.count() == 8
        assert store.search(vecs[5], k=1)[0].chunk_id == chunks[5].chunk_id

    def test_wrong_shape_is_rejected(self, open_store: StoreOpener) -> None:
        store = open_store()
        with pytest.raises(StoreError, match="shape"):
            store.add(make_chunks("d", 2), unit_vectors(2, 8))

    def test_shard_merge_equals_brute_force_on_small_data(self, open_store: StoreOpener) -> None:
        store = open_store(shards=3)
        chunks, vecs = make_chunks("d", 300), unit_vectors(300, 16, seed=3)
        store.add(chunks, vecs)
        ids = [c.chunk_id for c in chunks]
        for q in unit_vectors(10, 16, seed=4):
            assert [h.chunk_id for h in store.search(q, k=10)] == brute_force(vecs, ids, q, 10)
            per_shard = sorted((h for s in range(3) for h in store.search_shard(s, q, 10)), key=lambda h: -h.score)
            assert [h.chunk_id for h in per_shard[:10]] == brute_force(vecs, ids, q, 10)

    @pytest.mark.parametrize("share", [0.5, 0.05, 0.004])
    def test_a_filter_returns_the_exact_top_k_among_allowed_documents(self, open_store: StoreOpener,
                                                                      share: float) -> None:
        """Half, a twentieth and a handful of 1000 documents: the top 10 among them, as an exact scan finds
        it (a graph search must widen, not stop at the few allowed nodes near the unfiltered top)."""
        store = open_store(dim=16, shards=2)
        rng = np.random.default_rng(11)
        n = 1000
        chunks = [c for d in range(n) for c in make_chunks(f"doc{d}", 1)]
        vecs = unit_vectors(n, 16, seed=12)
        store.add(chunks, vecs)
        allowed = frozenset(f"doc{d}" for d in rng.choice(n, max(1, int(n * share)), replace=False))
        keep = [i for i, c in enumerate(chunks) if c.doc_id in allowed]
        ids = [chunks[i].chunk_id for i in keep]
        for q in unit_vectors(5, 16, seed=13):
            got = [h.chunk_id for h in store.search(q, 10, allowed)]
            assert got == brute_force(vecs[keep], ids, q, 10)
            per_shard = sorted((h for s in range(2) for h in store.search_shard(s, q, 10, allowed)),
                               key=lambda h: -h.score)
            assert [h.chunk_id for h in per_shard[:10]] == got

    def test_recall_at_10_under_a_filter_on_clustered_vectors(self, open_store: StoreOpener) -> None:
        """Enough vectors that half of them is too many to scan: a filtered graph search, widened."""
        rng = np.random.default_rng(21)
        dim, n = 32, 8000
        x = clustered_vectors(rng, n, dim)
        store = open_store(dim=dim, shards=1, ef_construction=100, ef_search=64)
        chunks = [c for d in range(n) for c in make_chunks(f"doc{d}", 1)]
        store.add(chunks, x)
        allowed = frozenset(f"doc{d}" for d in range(0, n, 2))
        keep = [i for i, c in enumerate(chunks) if c.doc_id in allowed]
        ids = [chunks[i].chunk_id for i in keep]
        queries = x[rng.integers(0, n, 50)] + 0.05 * rng.standard_normal((50, dim)).astype(np.float32)
        found = [store.search(q / np.linalg.norm(q), 10, allowed) for q in queries]
        assert all(h.chunk_id in set(ids) for hits in found for h in hits)
        recall = np.mean([len({h.chunk_id for h in hits} & set(brute_force(x[keep], ids, q, 10))) / 10
                          for hits, q in zip(found, queries, strict=True)])
        assert recall >= 0.95

    def test_a_filter_that_allows_nothing_finds_nothing(self, open_store: StoreOpener) -> None:
        store = open_store()
        chunks, vecs = make_chunks("d1", 10), unit_vectors(10, 16)
        store.add(chunks, vecs)
        assert store.search(vecs[0], 5, frozenset()) == []
        assert store.search(vecs[0], 5, frozenset({"absent"})) == []
        assert store.search(vecs[0], 5, frozenset({"d1"}))[0].chunk_id == chunks[0].chunk_id

    def test_recall_at_10_on_clustered_vectors(self, open_store: StoreOpener) -> None:
        rng = np.random.default_rng(5)
        dim, n = 32, 5000
        x = clustered_vectors(rng, n, dim)
        store = open_store(dim=dim, shards=4, ef_construction=100, ef_search=64)
        chunks = make_chunks("d", n)
        for i in range(0, n, 1000):  # several batches: exercises capacity growth
            store.add(chunks[i:i + 1000], x[i:i + 1000])
        ids = [c.chunk_id for c in chunks]
        queries = x[rng.integers(0, n, 100)] + 0.05 * rng.standard_normal((100, dim)).astype(np.float32)
        recall = np.mean([len({h.chunk_id for h in store.search(q / np.linalg.norm(q), 10)}
                              & set(brute_force(x, ids, q, 10))) / 10 for q in queries])
        assert recall >= 0.95

    # reopening: a store opened again sees every write that returned (an embedded one replays its log)
    def test_reopen_without_flush_replays_the_log(self, open_store: StoreOpener) -> None:
        first = open_store()
        chunks, vecs = make_chunks("d1", 30), unit_vectors(30, 16)
        first.add(chunks, vecs)
        first.delete_documents(["nothing"])
        second = open_store()  # the first never flushed
        assert second.count() == 30
        assert second.search(vecs[7], k=1)[0].chunk_id == chunks[7].chunk_id

    def test_checkpoint_then_more_writes_survive_reopen(self, open_store: StoreOpener) -> None:
        first = open_store(checkpoint_every=25)
        chunks, vecs = make_chunks("d1", 60), unit_vectors(60, 16)
        for i in range(0, 60, 10):
            first.add(chunks[i:i + 10], vecs[i:i + 10])
        first.delete_documents(["d1"])
        first.add(chunks[:5], vecs[:5])
        second = open_store()
        assert second.count() == 5
        assert {h.chunk_id for h in second.search(vecs[0], k=60)} == {c.chunk_id for c in chunks[:5]}

    # the embedder that built the index ------------------------------------------------------------------------
    def test_dim_mismatch_says_another_model(self, open_store: StoreOpener) -> None:
        open_store(dim=16).close()
        with pytest.raises(StoreError, match="another model"):
            open_store(dim=32)
        assert open_store(dim=None).dim == 16  # a reader takes the recorded dim

    @pytest.mark.parametrize("read_only", [False, True], ids=["write", "read"])
    def test_another_embedder_is_refused_naming_both(self, open_store: StoreOpener, read_only: bool) -> None:
        open_store(dim=16, model="model-a").close()
        for dim, model in ((16, "model-b"), (32, "model-a"), (32, "model-b")):
            with pytest.raises(StoreError, match="another model") as refused:
                open_store(dim=dim, model=model, read_only=read_only)
            assert "model-a (16-d)" in str(refused.value) and f"{model} ({dim}-d)" in str(refused.value)
        # A caller that does not know the embedder is not checked on what it does not know.
        assert open_store(dim=None, model="", read_only=read_only).dim == 16
        assert open_store(dim=16, model="", read_only=read_only).dim == 16

    def test_an_unrecorded_model_is_recorded_by_the_first_writer(self, open_store: StoreOpener) -> None:
        writer = open_store(dim=16, model="")  # e.g. built before models were recorded
        chunks, vecs = make_chunks("d1", 4), unit_vectors(4, 16)
        writer.add(chunks, vecs)
        assert open_store(dim=16, model="model-x", read_only=True).count() == 4  # a reader records nothing
        open_store(dim=16, model="model-a").add(chunks[:1], vecs[:1])  # the first writer that knows records it
        for read_only in (False, True):
            with pytest.raises(StoreError, match="model-a"):
                open_store(dim=16, model="model-x", read_only=read_only)
        assert open_store(dim=16, model="model-a", read_only=True).count() == 4

    # a reader next to a writer ---------------------------------------------------------------------------
    def test_reader_sees_writer_commits_and_checkpoints(self, open_store: StoreOpener) -> None:
        writer = open_store(checkpoint_every=1_000_000)
        chunks, vecs = make_chunks("d1", 40), unit_vectors(40, 16)
        writer.add(chunks[:10], vecs[:10])
        reader = open_store(dim=None, read_only=True)
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

    def test_a_reader_needs_an_index(self, open_store: StoreOpener) -> None:
        with pytest.raises(StoreError, match="no vector index"):
            open_store(dim=None, read_only=True)


# keywords -----------------------------------------------------------------------------------------------------
def text_chunk(doc_id: str, position: int, text: str) -> Chunk:
    return Chunk.make(doc_id, position, text, char_start=0, char_end=len(text))


CORPUS = [
    text_chunk("d1", 0, "The athlete runs every morning along the river."),
    text_chunk("d1", 1, "Protein folding is studied with molecular dynamics."),
    text_chunk("d2", 0, "BRCA1 mutations increase the risk of breast cancer."),
    text_chunk("d3", 0, "Cats sleep most of the day; dogs bark at strangers."),
]


class KeywordStoreContract(StoreContract):
    """KeywordStore: BM25 ranking, English analysis, robust queries, titles, deletes, readers."""

    kind = "keywords"
    protocol = KeywordStore

    @pytest.fixture
    def filled(self, store: Any) -> Any:
        store.add(CORPUS)
        return store

    def test_stemming_matches_other_word_forms(self, filled: Any) -> None:
        assert filled.search("running", 3)[0].chunk_id == CORPUS[0].chunk_id
        assert filled.search("folded proteins", 3)[0].chunk_id == CORPUS[1].chunk_id

    def test_stop_words_alone_match_nothing(self, filled: Any) -> None:
        assert filled.search("the of and", 5) == []

    def test_ranking_is_by_score_and_more_matches_rank_higher(self, filled: Any) -> None:
        hits = filled.search("breast cancer risk dogs", 10)
        assert hits[0].chunk_id == CORPUS[2].chunk_id
        assert CORPUS[3].chunk_id in {h.chunk_id for h in hits}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    @pytest.mark.parametrize("query", [
        '"unbalanced quote', "(paren", "a AND OR NOT b", "title:brca1", "field:[1 TO 2]", "brca1^2 ~3",
        "*", "\\", "-", "ünïcödé 日本語 ✓", "", "   ", "C++ && || !", "{}[]<>~^:", "x" * 500,
    ])
    def test_arbitrary_query_text_never_raises(self, filled: Any, query: str) -> None:
        hits = filled.search(query, 5)
        assert isinstance(hits, list)
        if query == "title:brca1":
            assert hits[0].chunk_id == CORPUS[2].chunk_id  # the colon is not field syntax

    def test_a_filter_ranks_the_allowed_documents_only(self, filled: Any) -> None:
        everything = filled.search("protein cancer cats river", 10)
        only = filled.search("protein cancer cats river", 10, frozenset({"d2", "d3"}))
        assert {h.chunk_id for h in only} == {CORPUS[2].chunk_id, CORPUS[3].chunk_id}
        # the allowed chunks keep their scores and their order
        assert [h.chunk_id for h in only] == [h.chunk_id for h in everything if h.chunk_id in {
            CORPUS[2].chunk_id, CORPUS[3].chunk_id}]
        assert [h.score for h in only] == pytest.approx([h.score for h in everything
                                                         if h.chunk_id in {c.chunk_id for c in CORPUS[2:]}])
        assert filled.search("protein", 10, frozenset()) == []
        assert filled.search("protein", 10, frozenset({"d3"})) == []  # d3 holds no protein

    def test_titles_are_searchable(self, open_store: StoreOpener) -> None:
        store = open_store()
        store.add([text_chunk("dt", 0, "Results were significant.")], titles={"dt": "Zebrafish regeneration"})
        assert store.search("zebrafish", 1)[0].chunk_id == text_chunk("dt", 0, "Results were significant.").chunk_id

    def test_readd_is_idempotent(self, filled: Any) -> None:
        filled.add(CORPUS[:2])
        assert filled.count() == len(CORPUS)
        assert len(filled.search("athlete", 10)) == 1

    def test_delete_documents(self, filled: Any) -> None:
        assert filled.delete_documents(["d1", "absent"]) == 2
        assert filled.delete_documents(["d1"]) == 0
        assert filled.count() == 2
        assert filled.search("running protein", 10) == []

    def test_reader_sees_committed_adds(self, open_store: StoreOpener) -> None:
        writer = open_store()
        writer.add(CORPUS[:1])
        reader = open_store(read_only=True)
        assert reader.count() == 1
        writer.add(CORPUS[1:])
        assert reader.search("brca1", 1)[0].chunk_id == CORPUS[2].chunk_id
        with pytest.raises(StoreError, match="read-only"):
            reader.add(CORPUS[:1])


# metadata -----------------------------------------------------------------------------------------------------
def make_document(name: str, text: str = "hello world", source: str = "file:///c.jsonl", **meta: object) -> Document:
    uri = f"{source}#{name}"
    return Document(doc_id=document_id(uri), uri=uri, source=source, content_hash=f"h-{text}", text=text,
                    title=f"Title {name}", metadata=dict(meta))


def chunks_of(d: Document, n: int) -> list[Chunk]:
    return [Chunk.make(d.doc_id, i, f"{d.text} {i}", char_start=i, char_end=i + 1, page_start=1, page_end=2,
                       n_tokens=3, metadata={"k": i}) for i in range(n)]


class MetaStoreContract(StoreContract):
    """MetaStore: pending/commit visibility, chunk replacement, lookups, failures, sources, readers."""

    kind = "meta"
    protocol = MetaStore

    def test_commit_makes_chunks_visible_with_all_fields(self, store: Any) -> None:
        d = make_document("a")
        chunks = chunks_of(d, 3)
        store.mark_pending([d])
        assert store.get_chunks([c.chunk_id for c in chunks]) == {}
        store.commit([d], chunks, {d.doc_id: "blobkey"})
        got = store.get_chunks([c.chunk_id for c in chunks] + ["missing"])
        assert got == {c.chunk_id: c for c in chunks}
        assert got[chunks[2].chunk_id].metadata == {"k": 2}
        rec = store.get_document(d.doc_id)
        assert (rec.status, rec.n_chunks, rec.blob_key, rec.title) == ("committed", 3, "blobkey", "Title a")

    def test_commit_replaces_a_documents_chunks(self, store: Any) -> None:
        d1 = make_document("a", "old text")
        old = chunks_of(d1, 4)
        store.commit([d1], old, {})
        d2 = make_document("a", "new text")
        new = chunks_of(d2, 2)
        store.mark_pending([d2])
        assert store.get_chunks([c.chunk_id for c in old]) == {}  # pending hides the old version
        store.commit([d2], new, {})
        assert store.get_chunks([c.chunk_id for c in old]) == {}
        assert set(store.get_chunks([c.chunk_id for c in new])) == {c.chunk_id for c in new}
        assert store.chunk_ids_of([d2.doc_id]) == [c.chunk_id for c in new]
        assert store.document_hashes("file:///c.jsonl") == {d2.doc_id: "h-new text"}

    def test_documents_filters_and_external_ids(self, store: Any) -> None:
        a, b = make_document("a", external_id="E1"), make_document("b", external_id=7)
        c = make_document("c", source="file:///other.txt")
        store.commit([a, b], chunks_of(a, 1) + chunks_of(b, 1), {})
        store.mark_pending([c])
        assert {r.doc_id for r in store.documents(status="committed")} == {a.doc_id, b.doc_id}
        assert [r.doc_id for r in store.documents(source="file:///other.txt")] == [c.doc_id]
        assert len(store.documents(limit=2)) == 2 and len(store.documents(limit=2, offset=2)) == 1
        assert store.doc_ids_by_external(["E1", "7", "nope"]) == {"E1": a.doc_id, "7": b.doc_id}
        assert store.get_document(a.doc_id).metadata == {"external_id": "E1"}

    def test_filter_documents(self, store: Any) -> None:
        from ..filters import as_filter

        a = make_document("a", source="file:///srv/docs/a.md", year=2019, tags=["x", "y"], team={"name": "red"})
        b = make_document("b", source="file:///srv/docs/sub/b.pdf", year=2021, tags="y")
        c = make_document("c", source="file:///srv/other/c.txt", year="2022")
        pending = make_document("p", source="file:///srv/docs/p.md", year=2020)
        store.commit([a, b, c], chunks_of(a, 1) + chunks_of(b, 2) + chunks_of(c, 1), {})
        store.mark_pending([pending])
        store.put_source(SourceRecord("file:///srv/docs/a.md", "h", 1, 1_700_000_000.0, "committed"))
        store.put_source(SourceRecord("file:///srv/docs/sub/b.pdf", "h", 1, 1_600_000_000.0, "committed"))

        def match(flt: Any) -> set[str]:
            return {({a.doc_id: "a", b.doc_id: "b", c.doc_id: "c"}[d]) for d in store.filter_documents(as_filter(flt))}

        assert match("year >= 2020") == {"b"}  # a number never matches text ("2022"), pending never shows
        assert match({"year": "2022"}) == {"c"}
        assert match("year in (2019, 2022, '2022')") == {"a", "c"}
        assert match("tags = y") == {"a", "b"}  # a list matches by any element
        assert match("tags in (x)") == {"a"}
        assert match("team.name = red") == {"a"}
        assert match("not tags = x") == {"b", "c"}  # a document without the field is not equal
        assert match("year != 2019") == {"b", "c"}
        assert match("source:/srv/docs/**") == {"a", "b"}
        assert match("source:/srv/docs/*") == {"a"}
        assert match("source:**/*.pdf or source = /srv/other/c.txt") == {"b", "c"}
        assert match({"source": {"prefix": "/srv/docs/s"}}) == {"b"}
        assert match("not source:**/*.md") == {"b", "c"}
        assert match(f"doc_id in ({a.doc_id}, {c.doc_id})") == {"a", "c"}
        assert match("title = 'Title b' or chunks >= 2") == {"b"}
        assert match("modified >= 2023-01-01") == {"a"}
        assert match("modified < 2023-01-01T00:00:00+00:00 and modified > 0") == {"b"}
        assert match("team.name exists") == {"a"}
        assert match("not tags exists") == {"c"}
        assert match("modified exists and title exists") == {"a", "b"}
        assert match("meta.title = anything") == set()
        assert match("year > 3000") == set()
        assert match("source:/nowhere/**") == set()

    def test_tag_documents(self, store: Any) -> None:
        from ..filters import as_filter

        a = make_document("a", source="file:///x.jsonl", year=2019)
        b = make_document("b", source="file:///x.jsonl")
        c = make_document("c", source="file:///y.txt")
        pending = make_document("p", source="file:///x.jsonl")
        store.commit([a, b, c], chunks_of(a, 1) + chunks_of(b, 1) + chunks_of(c, 1), {})
        store.mark_pending([pending])
        assert store.tag_documents(["file:///x.jsonl", "file:///absent"], {"team": "red", "year": 2024}) == 2
        assert store.get_document(a.doc_id).metadata == {"year": 2024, "team": "red"}  # a tag replaces a key
        assert store.get_document(c.doc_id).metadata in ({}, None)
        assert sorted(store.filter_documents(as_filter("team = red and year = 2024"))) == sorted([a.doc_id,
                                                                                                 b.doc_id])
        assert store.tag_documents(["file:///y.txt"], {}) == 0

    def test_delete_documents_and_failures(self, store: Any) -> None:
        a, b = make_document("a"), make_document("b")
        store.commit([a, b], chunks_of(a, 2) + chunks_of(b, 2), {})
        assert store.delete_documents([a.doc_id, "absent"]) == 1
        assert store.get_document(a.doc_id) is None
        assert store.chunk_ids_of([a.doc_id]) == []
        # A committed document whose file turned bad keeps its last good version visible.
        store.mark_failed(b.uri, b.source, "corrupt")
        assert store.get_document(b.doc_id).status == "committed"
        assert len(store.get_chunks(store.chunk_ids_of([b.doc_id]))) == 2
        # One that never committed (here: left pending by a crash) is marked failed.
        c = make_document("c")
        store.mark_pending([c])
        store.mark_failed(c.uri, c.source, "corrupt")
        assert store.get_document(c.doc_id).status == "failed"
        stats = store.stats()
        assert stats["documents_by_status"] == {"committed": 1, "failed": 1}
        assert stats["chunks"] == 2 and stats["failures"] == 2

    def test_sources_round_trip(self, store: Any) -> None:
        rec = SourceRecord(uri="file:///x.pdf", content_hash="h", size=10, mtime=1.5, status="committed",
                           n_documents=1, updated_at=2.0)
        store.put_source(rec)
        assert store.get_source("file:///x.pdf") == rec
        assert store.sources() == [rec]
        store.delete_source("file:///x.pdf")
        assert store.get_source("file:///x.pdf") is None

    def test_reader_sees_writer_commits(self, open_store: StoreOpener) -> None:
        writer = open_store()
        reader = open_store(read_only=True)
        d = make_document("a")
        writer.commit([d], chunks_of(d, 2), {})
        assert len(reader.get_chunks(writer.chunk_ids_of([d.doc_id]))) == 2
        with pytest.raises(StoreError, match="read-only"):
            reader.mark_pending([d])

    def test_embed_cache_hits_only_its_own_model(self, store: Any) -> None:
        vec = np.arange(4, dtype=np.float32).tobytes()
        store.cache_vectors("m1", [CachedVector(b"h1", "doc-a", vec)], {"doc-a": {b"h1"}})
        assert store.cached_vectors("m1", [b"h1", b"h2", b"h1"]) == {b"h1": vec}
        assert store.cached_vectors("m2", [b"h1"]) == {}  # another embedder never sees m1's vectors
        # An entry already there stays as it is: the first vector written for a text is the one served.
        store.cache_vectors("m1", [CachedVector(b"h1", "doc-b", b"other")], {"doc-b": {b"h1"}})
        assert store.cached_vectors("m1", [b"h1"]) == {b"h1": vec}

    def test_embed_cache_evicts_what_a_rewritten_document_dropped(self, store: Any) -> None:
        entries = [CachedVector(h, "doc-a", h * 4) for h in (b"h1", b"h2")]
        store.cache_vectors("m1", entries, {"doc-a": {b"h1", b"h2"}})
        store.cache_vectors("m0", [CachedVector(b"h1", "doc-a", b"old model")], {})
        # doc-a is written again holding h1 and h3 (with m1): h2 and its m0 entry go, h1 stays.
        store.cache_vectors("m1", [CachedVector(b"h3", "doc-a", b"h3")], {"doc-a": {b"h1", b"h3"}})
        assert store.cached_vectors("m1", [b"h1", b"h2", b"h3"]) == {b"h1": b"h1" * 4, b"h3": b"h3"}
        assert store.cached_vectors("m0", [b"h1"]) == {}
        assert store.stats()["embed_cache"] == 2

    def test_embed_cache_entries_leave_with_their_document(self, store: Any) -> None:
        store.cache_vectors("m1", [CachedVector(b"h1", "doc-a", b"v1"), CachedVector(b"h2", "doc-b", b"v2")],
                            {"doc-a": {b"h1"}, "doc-b": {b"h2"}})
        assert store.evict_cached_vectors(["doc-a", "doc-a", "absent"]) == 1
        assert store.cached_vectors("m1", [b"h1", b"h2"]) == {b"h2": b"v2"}
        assert store.evict_cached_vectors([]) == 0


# blobs --------------------------------------------------------------------------------------------------------
class BlobStoreContract(StoreContract):
    """BlobStore: content addressing (sha256 hex keys), idempotence, streaming files, errors."""

    kind = "blobs"
    protocol = BlobStore

    def test_put_get_is_content_addressed_and_idempotent(self, store: Any) -> None:
        key = store.put(b"some bytes")
        assert key == hashlib.sha256(b"some bytes").hexdigest()
        assert store.put(b"some bytes") == key
        assert store.get(key) == b"some bytes"
        assert store.exists(key)
        store.delete(key)
        store.delete(key)  # absent: no error
        assert not store.exists(key)
        with pytest.raises(StoreError, match="no blob"):
            store.get(key)

    def test_put_file_streams_large_files(self, store: Any, tmp_path: Path) -> None:
        data = bytes(range(256)) * (5 * 4096 + 17)  # ~5 MB: several read pieces
        src = tmp_path / "big.bin"
        src.write_bytes(data)
        key = store.put_file(str(src))
        assert key == hashlib.sha256(data).hexdigest() == store.put(data)
        assert store.get(key) == data

    def test_invalid_keys_and_missing_files_raise_store_error(self, store: Any, tmp_path: Path) -> None:
        with pytest.raises(StoreError, match="invalid blob key"):
            store.get("../../etc/passwd")
        with pytest.raises(StoreError):
            store.put_file(str(tmp_path / "missing"))


# graph --------------------------------------------------------------------------------------------------------
def entity_chunk(doc_id: str, position: int, *names: str) -> Chunk:
    return Chunk.make(doc_id, position, f"{doc_id} {position} {' '.join(names)}", char_start=0, char_end=1,
                      entities=tuple((n, "TEST") for n in names))


# "common" is in every chunk; "brca1" and "tp53" are rare; "parp" only co-occurs with brca1.
GRAPH = [
    entity_chunk("d1", 0, "brca1", "tp53", "common"),
    entity_chunk("d1", 1, "brca1", "common"),
    entity_chunk("d2", 0, "tp53", "common"),
    entity_chunk("d3", 0, "common", "parp"),
    entity_chunk("d3", 1, "brca1", "parp", "common"),
    entity_chunk("d4", 0, "common"),
]


def _ids(hits: list[Any]) -> list[str]:
    return [h.chunk_id for h in hits]


class GraphStoreContract(StoreContract):
    """GraphStore: mentions, idf-weighted lookup, 1-hop neighbours at a discount, exact deletes."""

    kind = "graph"
    protocol = GraphStore

    def test_more_and_rarer_entities_rank_higher(self, store: Any) -> None:
        c = GRAPH
        store.add(c)
        hits = store.chunks_for_entities(["BRCA1", "tp53"], k=10, hops=0)
        assert _ids(hits)[0] == c[0].chunk_id  # both entities
        assert set(_ids(hits)) == {c[0].chunk_id, c[1].chunk_id, c[2].chunk_id, c[4].chunk_id}
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        rare = store.chunks_for_entities(["tp53"], k=10, hops=0)[0].score
        common = store.chunks_for_entities(["common"], k=10, hops=0)[0].score
        assert rare > common

    def test_a_filter_ranks_the_allowed_documents_chunks_only(self, store: Any) -> None:
        c = GRAPH
        store.add(c)
        for hops in (0, 1):
            everything = store.chunks_for_entities(["brca1"], k=10, hops=hops)
            only = store.chunks_for_entities(["brca1"], k=10, hops=hops, allowed=frozenset({"d3", "d4"}))
            assert only and {h.chunk_id for h in only} <= {c[3].chunk_id, c[4].chunk_id, c[5].chunk_id}
            assert [(h.chunk_id, h.score) for h in only] == [(h.chunk_id, h.score) for h in everything
                                                             if h.chunk_id in {x.chunk_id for x in c[3:]}]
        assert store.chunks_for_entities(["brca1"], k=10, allowed=frozenset()) == []

    def test_one_hop_adds_neighbour_chunks_at_a_discount(self, store: Any) -> None:
        c = GRAPH
        store.add(c)
        direct = store.chunks_for_entities(["parp"], k=10, hops=0)
        assert set(_ids(direct)) == {c[3].chunk_id, c[4].chunk_id}
        hop = store.chunks_for_entities(["parp"], k=10, hops=1)
        assert c[1].chunk_id in _ids(hop)  # brca1 co-occurs with parp
        assert min(h.score for h in hop if h.chunk_id in _ids(direct)) > \
            max(h.score for h in hop if h.chunk_id == c[1].chunk_id)
        assert store.chunks_for_entities(["unknown"], k=10) == []

    def test_readd_is_idempotent_and_delete_is_exact(self, store: Any) -> None:
        c = GRAPH
        store.add(c)
        store.add(c[:2])
        assert store.stats() == {"entities": 4, "mentions": 13, "chunks": 6}
        assert store.delete_documents(["d3", "absent"]) == 5
        assert store.known_entities(["parp", "brca1", "nothing"]) == ["brca1"]
        assert store.stats() == {"entities": 3, "mentions": 8, "chunks": 4}
        hop = store.chunks_for_entities(["brca1"], k=10, hops=1)
        assert c[3].chunk_id not in _ids(hop) and c[4].chunk_id not in _ids(hop)
