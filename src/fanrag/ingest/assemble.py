"""Merge point of page-range fan-out: the pieces of a split document come back in any order; once all
have arrived they are joined in page order into one Document whose chunks are renumbered, so ids and
offsets are the same as if one process had produced them in sequence."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import pairwise

import numpy as np

from ..types import Chunk, Document, Page
from .work import Piece

SEP = "\n\n"  # how the loaders join pages, and so how parts are joined


@dataclass(slots=True)
class Ready:
    """A complete document with its chunks and their vectors (rows in chunk order)."""

    piece: Piece  # the first piece (carries the plan/source)
    doc: Document
    chunks: list[Chunk]
    vectors: np.ndarray


@dataclass
class Assembler:
    _waiting: dict[str, dict[int, tuple[Piece, np.ndarray]]] = field(default_factory=dict)

    def add(self, piece: Piece, vectors: np.ndarray) -> Ready | None:
        if piece.n_parts == 1:
            return Ready(piece, piece.doc, piece.chunks, vectors)
        parts = self._waiting.setdefault(piece.doc.doc_id, {})
        parts[piece.index] = (piece, vectors)
        if len(parts) < piece.n_parts:
            return None
        del self._waiting[piece.doc.doc_id]
        ordered = [parts[i] for i in sorted(parts)]
        return merge([p for p, _ in ordered], [v for _, v in ordered])

    @property
    def pending(self) -> int:
        return len(self._waiting)


def merge(pieces: list[Piece], vectors: list[np.ndarray]) -> Ready:
    first = pieces[0].doc
    texts: list[str] = []
    pages: list[Page] = []
    chunks: list[Chunk] = []
    offset = 0
    for piece in pieces:
        doc = piece.doc
        pages.extend(Page(p.number, p.text, p.offset + offset) for p in doc.pages)
        for c in piece.chunks:
            chunks.append(Chunk.make(
                first.doc_id, len(chunks), c.text, char_start=c.char_start + offset, char_end=c.char_end + offset,
                page_start=c.page_start, page_end=c.page_end, n_tokens=c.n_tokens, metadata=c.metadata,
                entities=c.entities, header=c.header))
        texts.append(doc.text)
        offset += len(doc.text) + len(SEP)
    meta = {k: v for k, v in first.metadata.items() if k not in ("part", "n_pages_total")}
    doc = Document(doc_id=first.doc_id, uri=first.uri, source=first.source,
                   content_hash=pieces[0].plan.content_hash, text=SEP.join(texts), title=first.title,
                   mime=first.mime, pages=tuple(pages), metadata=meta)
    dim = vectors[0].shape[1] if vectors and vectors[0].ndim == 2 else 0
    vecs = np.concatenate([v for v in vectors if len(v)]) if any(len(v) for v in vectors) else np.zeros((0, dim),
                                                                                                        np.float32)
    return Ready(pieces[0], doc, chunks, vecs)


def split_rows(vectors: np.ndarray, sizes: Iterable[int]) -> list[np.ndarray]:
    """``vectors`` cut into consecutive blocks of ``sizes`` rows (one block per piece, or per part)."""
    bounds = np.cumsum([0, *sizes])
    return [vectors[a:b] for a, b in pairwise(bounds)]
