"""The embedding cache end to end: a one-page edit embeds only the chunks whose text changed, the vectors it
serves are a fresh embed's, another embedder never hits, and deletes, prunes and sweeps take the entries
along, on embedded SQLite and on PostgreSQL (``embed/cache.py``)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fanrag.embed.cache import EmbedCache, identity, text_key
from fanrag.engine import Engine
from fanrag.errors import ConfigError
from fanrag.ingest.assemble import merge
from fanrag.settings import Settings
from fanrag.types import Chunk

from ..conftest import ROOT, make_settings
from ..servers.postgres import pg_database, pg_server  # noqa: F401 - fixtures
from .test_pipeline import assert_consistent

sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
from make_fixtures import pdf_bytes, text_page

FONTS = b"<< /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >>"
WORDS = ("anchor", "basin", "cinder", "delta", "ember", "fjord", "glacier", "harbor", "inlet", "jetty", "kelp",
         "lagoon", "moraine", "nectar", "orchard", "prairie", "quarry", "ridge", "summit", "tundra", "upland",
         "valley", "willow", "xeric", "yarrow", "zephyr")
N_PAGES = 24
# Split like a long manual (by page range), small enough for a test: 6 ranges of 4 pages.
SPLIT = {"pipeline": {"pdf_page_threshold": 8, "pages_per_range": 4}}


def page_lines(number: int, edit: int = 0) -> list[str]:
    """Page ``number``: 30 lines of text that differ from every other page's (``edit`` changes them)."""
    rng = np.random.default_rng(number * 1000 + edit)
    return [f"Page {number} line {i}: " + " ".join(rng.choice(WORDS, 9)) + "." for i in range(30)]


def write_manual(path: Path, edited: dict[int, int] | None = None) -> Path:
    """A ``N_PAGES``-page PDF; ``edited`` maps a page number to the edit it carries."""
    edits = edited or {}
    path.write_bytes(pdf_bytes([text_page(page_lines(n, edits.get(n, 0))) for n in range(1, N_PAGES + 1)], FONTS))
    return path


class CountingEmbedder:
    """The real embedder, recording every text it is asked to embed (``name`` may be overridden)."""

    def __init__(self, inner: Any, name: str | None = None) -> None:
        self._inner = inner
        self.name = name or inner.name
        self.texts: list[str] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += list(texts)
        return self._inner.embed(texts)


class Recorder:
    """Wraps a vector store's ``add``: the (indexed text, vector) of every chunk it receives."""

    def __init__(self, engine: Engine) -> None:
        self.added: list[tuple[str, np.ndarray]] = []
        add = engine.stores.vectors.add

        def recording(chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
            self.added += [(c.indexed_text, v.copy()) for c, v in zip(chunks, vectors, strict=True)]
            add(chunks, vectors)

        engine.stores.vectors.add = recording  # type: ignore[method-assign]

    def take(self) -> list[tuple[str, np.ndarray]]:
        out, self.added = self.added, []
        return out


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    stores = {"meta": request.getfixturevalue("pg_database")} if request.param == "postgres" else {}
    return make_settings(tmp_path / "home", stores=stores, **SPLIT)


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    with Engine.open(settings=settings) as eng:
        eng.embedder = CountingEmbedder(eng.embedder)  # type: ignore[assignment]
        yield eng


def embedded(engine: Engine) -> list[str]:
    """The texts sent to the embedder since the last call."""
    counting = engine.embedder
    assert isinstance(counting, CountingEmbedder)
    out, counting.texts = counting.texts, []
    return out


def test_a_one_page_edit_embeds_only_the_chunks_whose_text_changed(engine: Engine, tmp_path: Path) -> None:
    manual = write_manual(tmp_path / "manual.pdf")
    recorder = Recorder(engine)
    first = engine.ingest([manual])
    assert first.ok == 1 and not first.failed
    old = {text for text, _ in recorder.take()}
    assert sorted(embedded(engine)) == sorted(old)  # an empty cache: every chunk once
    assert engine.stores.meta.stats()["embed_cache"] == len(old)

    write_manual(manual, edited={10: 1})
    second = engine.ingest([manual])
    assert second.ok == 1 and not second.failed
    added = recorder.take()
    new = {text for text, _ in added}
    again = embedded(engine)
    assert sorted(again) == sorted(new - old)  # exactly the chunks whose text changed, each once
    assert 0 < len(again) <= len(new) // 4
    # The vectors served from the cache are the ones a fresh embed gives, bit for bit.
    texts = [t for t, _ in added]
    assert np.array_equal(np.stack([v for _, v in added]), engine.embedder._inner.embed(texts))  # type: ignore[attr-defined]
    # The texts the old version alone held left the cache with it: one entry per chunk text now.
    assert engine.stores.meta.stats()["embed_cache"] == len(new)
    assert_consistent(engine)


def test_delete_and_prune_take_the_entries_along(engine: Engine, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    manual, other = write_manual(corpus / "manual.pdf"), corpus / "notes.txt"
    other.write_text(" ".join(f"Note {i} on glaciers." for i in range(300)), encoding="utf-8")
    engine.ingest([corpus])
    meta = engine.stores.meta
    doc_id = next(d.doc_id for d in meta.documents() if d.source.endswith("manual.pdf"))
    n_other = len(meta.chunk_ids_of([d.doc_id for d in meta.documents() if d.doc_id != doc_id]))
    engine.delete_documents([doc_id])
    assert meta.stats()["embed_cache"] == n_other
    assert_consistent(engine)

    other.unlink()
    engine.ingest([corpus], prune=True)  # the manual comes back (its source was marked), the notes go
    assert meta.stats()["embed_cache"] == meta.stats()["chunks"] > 0
    assert_consistent(engine)
    manual.unlink()
    engine.ingest([corpus], prune=True)
    assert meta.stats()["embed_cache"] == 0 == meta.stats()["chunks"]
    assert_consistent(engine)


def test_a_swept_document_takes_its_entries_along(engine: Engine, tmp_path: Path) -> None:
    manual = write_manual(tmp_path / "manual.pdf")
    engine.ingest([manual])
    meta = engine.stores.meta
    (doc,) = meta.documents()
    # As a crash between the writes and the commit leaves it (PostgreSQL sweeps a dead writer's rows only).
    meta.mark_pending([_document(doc)])
    if hasattr(meta, "_stale_after_s"):
        meta._stale_after_s = 0.0
        meta._writer = "a writer that is gone"
    write_manual(manual, edited={3: 1})
    summary = engine.ingest([manual])
    assert summary.swept == 1 and summary.ok == 1
    chunks = meta.stats()["chunks"]
    assert meta.stats()["embed_cache"] == chunks  # the swept version's entries left; the new ones are in
    assert len(embedded(engine)) == 2 * chunks  # so the re-read embedded every chunk again
    assert_consistent(engine)


def _document(rec: Any) -> Any:
    from fanrag.types import Document

    return Document(doc_id=rec.doc_id, uri=rec.uri, source=rec.source, content_hash=rec.content_hash, text="")


def test_another_embedder_never_hits_the_entries_of_another(engine: Engine, tmp_path: Path) -> None:
    manual = write_manual(tmp_path / "manual.pdf")
    engine.ingest([manual])
    n = engine.stores.meta.stats()["chunks"]
    # The same model in another precision: the index accepts it (identity.py), but its vectors differ.
    first = engine.embedder
    other = CountingEmbedder(first._inner, name="onnx-fp32/all-MiniLM-L6-v2")  # type: ignore[attr-defined]
    engine.embedder = other  # type: ignore[assignment]
    write_manual(manual, edited={20: 1})
    summary = engine.ingest([manual])
    assert summary.ok == 1
    assert len(other.texts) == n  # nothing was served from the other embedder's entries
    cache = EmbedCache(engine.stores.meta, identity(first, engine.settings.embed.max_length), 384)
    assert asyncio.run(_hits(cache, other.texts)) == 0  # and the rewrite evicted the old embedder's entries


async def _hits(cache: EmbedCache, texts: list[str]) -> int:
    async def refuse(_: list[str]) -> np.ndarray:
        return np.zeros((len(_), cache.dim), np.float32)

    await cache.embed(texts, refuse)
    return cache.hits


def test_identity_names_what_changes_a_vector(embedder: Any) -> None:
    base = identity(embedder, 256)
    assert base.startswith(embedder.name) and "384d" in base
    assert identity(embedder, 128) != base
    assert text_key("header\ntext") != text_key("text") and len(text_key("\ud800")) == 16


def test_the_cache_can_be_turned_off(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", embed={"cache": False}, **SPLIT)
    manual = write_manual(tmp_path / "manual.pdf")
    with Engine.open(settings=settings) as eng:
        eng.embedder = CountingEmbedder(eng.embedder)  # type: ignore[assignment]
        eng.ingest([manual])
        write_manual(manual, edited={10: 1})
        eng.ingest([manual])
        n = eng.stores.meta.stats()["chunks"]
        assert eng.stores.meta.stats()["embed_cache"] == 0
        assert len(embedded(eng)) > n  # every chunk of both versions
    with pytest.raises(ConfigError, match="embed.cache"):
        Settings.load(home=tmp_path, overrides={"embed": {"cache": "perhaps"}}, env={})


def test_a_split_documents_chunks_keep_their_headers_through_the_merge() -> None:
    """The cache keys a chunk by header + text, so the merged document must carry what was embedded."""
    from fanrag.ingest.sources import SourceFile, SourcePlan
    from fanrag.ingest.work import Parts, Piece
    from fanrag.types import Document, Page

    src = SourceFile(path="/m.pdf", uri="file:///m.pdf", size=1, mtime=0.0)
    plan = SourcePlan(source=src, format="pdf", content_hash="h", units=2, parts=Parts(2, 1))
    pieces = []
    for i in range(2):
        doc = Document(doc_id="d", uri="file:///m.pdf", source="file:///m.pdf", content_hash="h", text=f"page {i}",
                       pages=(Page(i + 1, f"page {i}"),))
        chunk = Chunk.make("d", 0, f"page {i}", char_start=0, char_end=6, header=f"Manual · p. {i + 1}")
        pieces.append(Piece(plan=plan, doc=doc, chunks=[chunk], index=i, n_parts=2))
    ready = merge(pieces, [np.zeros((1, 4), np.float32)] * 2)
    assert [c.header for c in ready.chunks] == ["Manual · p. 1", "Manual · p. 2"]
