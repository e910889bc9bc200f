"""BM25 keyword search on tantivy.

One tantivy document per chunk: ``chunk_id`` (raw, stored), ``doc_id`` (raw, for deletes) and ``body``
(the document title, then the chunk text) analysed for English: simple tokenizer, lowercase, the
Lucene English stop words, Snowball (Porter2) stemming. Titles go into the same field as the text, as
Anserini's BEIR baselines do. tantivy scores with BM25 k1=1.2, b=0.75 (fixed).

User queries never go through tantivy's query parser (quotes, colons, parentheses and ``AND`` in a
question would be syntax): they are analysed with the same analyser and become a disjunction of terms.
A repeated query term counts twice, as in Lucene.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

import tantivy

from ..errors import IndexLocked, StoreError
from ..types import Chunk
from .base import Allowed, ScoredId

if TYPE_CHECKING:
    from .factory import OpenContext

ANALYZER = "fanrag_en"
_HEAP_BYTES = 64_000_000  # tantivy needs >= 15 MB per indexing thread
_MAX_TOKEN_CHARS = 40  # longer "words" are URLs, base64, sequences: noise for BM25


def english_analyzer() -> tantivy.TextAnalyzer:
    """The analyser used at index time and at query time (they must match)."""
    return (tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple())
            .filter(tantivy.Filter.remove_long(_MAX_TOKEN_CHARS))
            .filter(tantivy.Filter.lowercase())
            .filter(tantivy.Filter.stopword("english"))
            .filter(tantivy.Filter.stemmer("english"))
            .build())


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("chunk_id", stored=True, tokenizer_name="raw")
    builder.add_text_field("doc_id", stored=False, tokenizer_name="raw")
    # "freq": term frequencies without positions; BM25 needs nothing more and the index is smaller.
    builder.add_text_field("body", stored=False, tokenizer_name=ANALYZER, index_option="freq")
    return builder.build()


class TantivyKeywordStore:
    """KeywordStore on a tantivy index directory (``home/bm25``)."""

    @classmethod
    def from_url(cls, url: str, ctx: OpenContext) -> Self:
        """The embedded default: ``home/bm25/``, opened by ``open_stores``."""
        return cls(ctx.settings.home / "bm25", read_only=ctx.read_only)

    def __init__(self, path: str | Path, *, read_only: bool = False, heap_bytes: int = _HEAP_BYTES,
                 threads: int = 1) -> None:
        self.path = Path(path)
        self.read_only = read_only
        self._lock = threading.Lock()
        self._analyzer = english_analyzer()
        self._last_among: tuple[Allowed, tantivy.Query] | None = None
        self._schema = _schema()
        try:
            if read_only and not tantivy.Index.exists(str(self.path)):
                raise StoreError(f"{self.path}: no keyword index here yet (ingest something first)")
            self.path.mkdir(parents=True, exist_ok=True)
            self._index = tantivy.Index(self._schema, path=str(self.path), reuse=True)
            self._index.register_tokenizer(ANALYZER, self._analyzer)
            self._writer = None if read_only else self._index.writer(heap_size=heap_bytes, num_threads=threads)
        except ValueError as exc:
            if "lock" in str(exc).lower():
                raise IndexLocked(f"{self.path}: another process is writing this keyword index") from exc
            raise StoreError(f"{self.path}: cannot open keyword index: {exc}") from exc

    def _need_writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            raise StoreError(f"{self.path}: keyword store opened read-only")
        return self._writer

    def add(self, chunks: Sequence[Chunk], titles: dict[str, str] | None = None) -> None:
        writer = self._need_writer()
        titles = titles or {}
        with self._lock:
            try:
                for chunk in chunks:
                    # Delete-then-add in one commit: re-adding a chunk id replaces it (idempotent).
                    writer.delete_documents_by_term("chunk_id", chunk.chunk_id)
                    # the chunk's header (title › section path ...) when it has one, else the bare title
                    title = chunk.header or titles.get(chunk.doc_id, "")
                    body = f"{title}\n{chunk.text}" if title else chunk.text
                    writer.add_document(tantivy.Document(chunk_id=chunk.chunk_id, doc_id=chunk.doc_id, body=body))
                writer.commit()
            except ValueError as exc:
                writer.rollback()
                raise StoreError(f"{self.path}: keyword index write failed: {exc}") from exc

    def delete_documents(self, doc_ids: Iterable[str]) -> int:
        writer = self._need_writer()
        ids = list(dict.fromkeys(doc_ids))
        with self._lock:
            try:
                self._index.reload()
                searcher = self._index.searcher()
                removed = sum(searcher.search(self._term("doc_id", d), limit=1, count=True).count for d in ids)
                for doc_id in ids:
                    writer.delete_documents_by_term("doc_id", doc_id)
                writer.commit()
            except ValueError as exc:
                writer.rollback()
                raise StoreError(f"{self.path}: keyword index delete failed: {exc}") from exc
        return removed

    def _term(self, field: str, value: str) -> tantivy.Query:
        return tantivy.Query.term_query(self._schema, field, value, index_option="basic")

    def terms(self, text: str) -> list[str]:
        """The index terms of ``text`` (lowercased, stop words dropped, stemmed)."""
        return self._analyzer.analyze(text)

    def search(self, query: str, k: int, allowed: Allowed | None = None) -> list[ScoredId]:
        terms = self.terms(query)
        if not terms or k <= 0 or (allowed is not None and not allowed):
            return []
        q = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self._schema, "body", t, index_option="freq"))
             for t in terms])
        if allowed is not None:
            # The filter is a clause of the query (a term set on doc_id), so BM25 ranks only the allowed
            # chunks, as deep as k; a constant score of 0 adds nothing to a score (and costs less to
            # evaluate than a boost of 0: 1.8 ms against 4.4 ms for 300 documents).
            q = tantivy.Query.boolean_query([(tantivy.Occur.Must, q), (tantivy.Occur.Must, self._among(allowed))])
        try:
            self._index.reload()  # pick up commits made since the last search (ours or another process's)
            searcher = self._index.searcher()
            hits = searcher.search(q, limit=k, count=False).hits
            return [ScoredId(searcher.doc(addr)["chunk_id"][0], float(score)) for score, addr in hits]
        except ValueError as exc:
            raise StoreError(f"{self.path}: keyword search failed: {exc}") from exc

    def _among(self, allowed: Allowed) -> tantivy.Query:
        """The filter clause; the last one is kept, since a query searches again with the same set (PRF)."""
        last = self._last_among
        if last is not None and last[0] is allowed:
            return last[1]
        clause = tantivy.Query.const_score_query(
            tantivy.Query.term_set_query(self._schema, "doc_id", list(allowed)), 0.0)
        self._last_among = (allowed, clause)
        return clause

    def count(self) -> int:
        self._index.reload()
        return self._index.searcher().num_docs

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._writer.wait_merging_threads()  # consumes the writer and releases tantivy's lock
                self._writer = None
