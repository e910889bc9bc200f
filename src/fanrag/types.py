"""The data that flows through fanrag: frozen, typed, cheap to pickle between processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .ids import chunk_id as _chunk_id


class BranchName(StrEnum):
    """The retrieval branches, in fan-out order. The one list that settings, CLI, server and eval use."""

    DENSE = "dense"
    BM25 = "bm25"
    SUBQUERIES = "subqueries"
    GRAPH = "graph"
    HOP = "hop"  # a second retrieval hop through a bridge entity, and comparisons split by known names


BRANCH_NAMES: tuple[str, ...] = tuple(b.value for b in BranchName)  # ``"x" in BranchName`` raises on 3.11


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a loaded document. ``number`` is 1-based; ``offset`` is where the page's text starts
    in the document's full text (pages are joined with a blank line)."""

    number: int
    text: str
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Section:
    """A heading in a document: from character ``start`` of the document's text on, the text belongs to
    this section until the next heading of the same or a higher level (``level`` 1 is the highest).
    Loaders fill these from Markdown/HTML/DOCX headings, a PDF's outline or its bold/large lines."""

    start: int
    level: int
    title: str


@dataclass(frozen=True, slots=True)
class Table:
    """A table in the document's text, rows one per line: characters [start, end), and ``header``, the
    line(s) naming the columns. A chunk that holds part of the table carries ``header`` in its own
    header, so rows cut from their column names keep their meaning."""

    start: int
    end: int
    header: str


@dataclass(frozen=True, slots=True)
class Document:
    """A loaded document. ``doc_id`` comes from ``uri``; ``content_hash`` changes when the content does.

    ``source`` is the file the document came from (several documents can share one source: a JSONL
    collection). ``pages`` is empty for formats without pages; then ``text`` is the whole content.
    ``sections`` and ``tables`` locate headings and tables in ``text`` (sorted by start), where the
    loader can tell.
    """

    doc_id: str
    uri: str
    source: str
    content_hash: str
    text: str
    title: str = ""
    mime: str = "text/plain"
    pages: tuple[Page, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    sections: tuple[Section, ...] = ()
    tables: tuple[Table, ...] = ()

    @property
    def n_pages(self) -> int:
        return len(self.pages)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of a document that is embedded and indexed.

    ``char_start``/``char_end`` are offsets into the document's full text; ``page_start``/``page_end``
    are 1-based page numbers (0 when the format has no pages). ``entities`` is filled by the graph
    extractor during ingestion. ``header`` is the context the chunk is embedded and indexed with
    (document title, section path, page, a cut table's column names); it is stored apart from ``text``,
    so citations quote the text only.
    """

    chunk_id: str
    doc_id: str
    position: int
    text: str
    char_start: int
    char_end: int
    page_start: int = 0
    page_end: int = 0
    n_tokens: int = 0
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    entities: tuple[tuple[str, str], ...] = ()  # (normalised name, label)
    header: str = ""

    @property
    def indexed_text(self) -> str:
        """What the embedder and the keyword index see: the header, then the text."""
        return f"{self.header}\n{self.text}" if self.header else self.text

    @classmethod
    def make(cls, doc_id: str, position: int, text: str, **kw: Any) -> Chunk:
        return cls(chunk_id=_chunk_id(doc_id, position, text), doc_id=doc_id, position=position, text=text, **kw)


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved chunk, with the score of whichever stage produced it."""

    chunk_id: str
    score: float
    doc_id: str = ""
    text: str = ""
    source: str = ""
    page: int = 0
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True, slots=True)
class DocStatus:
    """How many documents the index holds in each state (only ``committed`` ones are searchable)."""

    committed: int = 0
    pending: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.committed + self.pending + self.failed

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> DocStatus:
        return cls(**{k: int(counts.get(k, 0)) for k in ("committed", "pending", "failed")})


@dataclass(frozen=True, slots=True)
class IndexStatus:
    """What an index holds, store by store (``fanrag status``). Committed chunks, vectors and keyword
    entries agree once every write has finished; a difference shows work a crash left to redo."""

    home: str
    embedder: str
    sources: int
    documents: DocStatus
    chunks: int
    failures: int
    vectors: int
    vector_shards: int
    keyword_chunks: int
    graph: dict[str, int] = field(default_factory=dict)
    schema_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]
        d["documents"] = self.documents.total
        d["documents_by_status"] = {k: v for k, v in (("committed", self.documents.committed),
                                                      ("pending", self.documents.pending),
                                                      ("failed", self.documents.failed)) if v}
        return d
