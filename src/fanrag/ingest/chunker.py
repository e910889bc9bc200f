"""Token-aware recursive chunking, counted in the embedder's own tokenizer.

The document is tokenized once (``tokenizer.offsets``); every cut is then a token index, so a chunk's
size is known without re-tokenizing while cutting. Each chunk takes as many tokens as fit in
``min(size, tokenizer.max_tokens)`` and ends at the best boundary in the second half of that window:
paragraph > line > sentence > word > anywhere (a 10,000-character "word" is cut between its tokens).
The next chunk starts about ``overlap`` tokens earlier, at a word start.

Invariants: ``chunk.text == doc.text[chunk.char_start:chunk.char_end]`` with no outer whitespace;
every non-whitespace character of the document lies in some chunk; ``n_tokens`` is the chunk text's
own token count and never exceeds the limit. A chunk cut inside a word is re-counted on its own text
(its edge word can tokenize into more pieces alone than in context); a chunk cut at whitespace keeps
the count from the document's tokens when the tokenizer passes a one-time probe showing that whitespace
cuts do not change counts (true of WordPiece/BERT, the default). Re-counting everything would tokenize
each document twice.
"""

from __future__ import annotations

import re
import weakref
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from ..embed.base import Tokenizer
from ..errors import CorruptDocument
from ..types import Chunk, Document
from .headers import add_headers, has_context

Span = tuple[int, int]

# Boundary strength of a cut between two tokens, judged by the text between them.
_PARAGRAPH, _LINE, _SENTENCE, _WORD, _NONE = 4, 3, 2, 1, 0
_SENTENCE_END = frozenset(".!?;。！？")
_CLOSERS = frozenset("\"')]}”’»")


@dataclass(frozen=True, slots=True)
class Piece:
    """A chunk's character range [start, end) and its token count (-1: to be counted on its own)."""

    start: int
    end: int
    n_tokens: int = -1


def chunk_document(doc: Document, tokenizer: Tokenizer, *, size: int, overlap: int,
                   min_size: int, header_tokens: int = 0) -> list[Chunk]:
    """Split ``doc.text`` into chunks of at most ``min(size, tokenizer.max_tokens)`` tokens.

    ``overlap`` tokens (about; cuts snap to word starts) repeat between consecutive chunks; a trailing
    piece of fewer than ``min_size`` new tokens is avoided by ending the chunk before it earlier. With
    ``header_tokens`` > 0 each chunk gets a header (``headers.py``) of at most that many tokens, and its
    text that many fewer, so header and text together still fit the embedder.
    """
    limit = min(size, tokenizer.max_tokens)
    with_headers = header_tokens > 0 and has_context(doc)
    if with_headers:
        limit = max(limit // 2, limit - header_tokens)
    if limit < 1:
        raise ValueError(f"chunk size limit must be >= 1 token, got {limit}")
    pieces: list[Piece] = []
    for start, end in _sections(doc.text):
        section = split_text(doc.text[start:end], tokenizer, limit=limit, overlap=min(overlap, limit // 2),
                             min_size=min_size)
        pieces.extend(Piece(p.start + start, p.end + start, p.n_tokens) for p in section)
    chunks = _make_chunks(doc, _fit(doc, tokenizer, pieces, limit))
    return add_headers(doc, chunks, tokenizer, header_tokens) if with_headers else chunks


SECTION_CHARS = 1 << 20


def _sections(text: str) -> list[Span]:
    """Cut a very long text into ~1 MB sections at paragraph (else line, else word) breaks, each
    tokenized on its own: the offsets of a 50 MB text file as Python tuples would take gigabytes.
    Chunks do not cross a section break, which falls where a chunk would likely end anyway."""
    out: list[Span] = []
    start, n = 0, len(text)
    while n - start > SECTION_CHARS:
        lo, hi = start + SECTION_CHARS // 2, start + SECTION_CHARS
        cut = -1
        for sep in ("\n\n", "\n", " "):
            cut = text.rfind(sep, lo, hi)
            if cut >= 0:
                break
        cut = hi if cut < 0 else cut
        out.append((start, cut))
        start = cut
    out.append((start, n))
    return out


def split_text(text: str, tokenizer: Tokenizer, *, limit: int, overlap: int = 0,
               min_size: int = 0) -> list[Piece]:
    """The chunk ranges of ``text``; ``n_tokens`` is filled where the document's tokens give it exactly."""
    if not text.strip():
        return []
    raw = tokenizer.offsets(text)
    spans = sorted(s for s in raw if s[1] > s[0])
    if not spans:
        # Nothing the tokenizer keeps (control characters only): one chunk, so no text is lost.
        return [Piece(*_strip(text, 0, len(text)))]
    bounded = _bounded_spans(spans)
    trust = len(spans) == len(raw) and len(bounded) == len(spans) and _whitespace_stable(tokenizer)
    spans = bounded
    n = len(spans)
    pieces = []
    for a, b in _windows(text, spans, limit, overlap, min_size):
        clean = (a == 0 or _level(text, spans, a) >= _WORD) and (b == n or _level(text, spans, b) >= _WORD)
        pieces.append(Piece(*_char_range(text, spans, a, b), b - a if trust and clean else -1))
    return pieces


# WordPiece turns a "word" longer than 100 characters (a base64 blob, a 1 MiB run of one letter) into one
# [UNK] token: counted in tokens it is tiny, in characters it is the whole file. Such a span is cut into
# pseudo-tokens of this many characters, so no chunk holds more than limit x this many characters; the
# pieces are then counted on their own text, like any chunk cut inside a word.
MAX_TOKEN_CHARS = 32


def _bounded_spans(spans: list[Span]) -> list[Span]:
    if all(b - a <= MAX_TOKEN_CHARS for a, b in spans):
        return spans
    out: list[Span] = []
    for a, b in spans:
        out.extend((s, min(s + MAX_TOKEN_CHARS, b)) for s in range(a, b, MAX_TOKEN_CHARS))
    return out


_PROBE = ("Chunks are counted once: na\u00efve splitting-at-whitespace (3.14%) isn't exact for every "
          "tokenizer, e.g. byte-level BPE.\nA new line; \u4e2d\u6587 text and ZZZunknownwordZZZ.")
_stable: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _whitespace_stable(tokenizer: Tokenizer) -> bool:
    """Whether cutting a text at whitespace splits its token count exactly (checked once per tokenizer)."""
    try:
        return _stable[tokenizer]
    except (KeyError, TypeError):
        pass
    full = tokenizer.count(_PROBE)
    cuts = [m.start() for m in re.finditer(r"\s+", _PROBE)]
    ok = all(tokenizer.count(_PROBE[:c]) + tokenizer.count(_PROBE[c:]) == full for c in cuts)
    try:
        _stable[tokenizer] = ok
    except TypeError:
        pass  # not weak-referenceable: probe again next time (a few microseconds)
    return ok


def _windows(text: str, spans: Sequence[Span], limit: int, overlap: int, min_size: int) -> list[Span]:
    """Token index ranges [a, b) of the chunks."""
    n = len(spans)
    out: list[Span] = []
    a = 0
    while n - a > limit:
        hi = a + limit
        if n - hi < min_size:
            hi = max(a + 1, n - min_size)  # leave a full-sized last chunk instead of a runt
        b = _best_cut(text, spans, a + max(1, (hi - a) // 2), hi)
        out.append((a, b))
        a = _overlap_start(text, spans, a, b, overlap)
    out.append((a, n))
    return out


def _level(text: str, spans: Sequence[Span], i: int) -> int:
    """How good a cut before token ``i`` is."""
    end, start = spans[i - 1][1], spans[i][0]
    if start <= end:
        return _NONE
    gap = text[end:start]
    newlines = gap.count("\n")
    if newlines >= 2:
        return _PARAGRAPH
    if newlines == 1:
        return _LINE
    if not any(c.isspace() for c in gap):
        return _NONE
    return _SENTENCE if _ends_sentence(text, spans[i - 1][0], end) else _WORD


def _ends_sentence(text: str, tok_start: int, end: int) -> bool:
    j = end - 1
    while j > tok_start and text[j] in _CLOSERS:
        j -= 1
    return text[j] in _SENTENCE_END


def _best_cut(text: str, spans: Sequence[Span], lo: int, hi: int) -> int:
    """The cut in [lo, hi] with the strongest boundary; the furthest one among equals."""
    best, best_level = hi, -1
    for i in range(hi, lo - 1, -1):
        level = _level(text, spans, i)
        if level > best_level:
            best, best_level = i, level
            if level == _PARAGRAPH:
                break
    return best


def _overlap_start(text: str, spans: Sequence[Span], a: int, b: int, overlap: int) -> int:
    """Where the chunk after [a, b) starts: about ``overlap`` tokens before ``b``, at a sentence start
    if one is near, else at a word start."""
    if overlap <= 0:
        return b
    first = max(a + 1, b - overlap)
    if first >= b:
        return b
    near = first + overlap // 2
    fallback = -1
    for i in range(first, b):
        level = _level(text, spans, i)
        if level >= _SENTENCE and i <= near:
            return i
        if level >= _WORD and fallback < 0:
            fallback = i
    return fallback if fallback >= 0 else first


def _char_range(text: str, spans: Sequence[Span], a: int, b: int) -> Span:
    # A chunk runs from its first token to the next chunk's first token (minus whitespace), so
    # characters the tokenizer drops between tokens still belong to a chunk.
    start = spans[a][0] if a > 0 else 0
    end = spans[b][0] if b < len(spans) else len(text)
    return _strip(text, start, end)


def _strip(text: str, start: int, end: int) -> Span:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _fit(doc: Document, tokenizer: Tokenizer, pieces: list[Piece], limit: int) -> list[Piece]:
    """Count the pieces whose count is unknown; re-split the rare one that came out over the limit."""
    text = doc.text
    todo = [i for i, p in enumerate(pieces) if p.n_tokens < 0]
    if not todo:
        return pieces
    counts = tokenizer.count_batch([text[pieces[i].start:pieces[i].end] for i in todo])
    for i, c in zip(todo, counts, strict=True):
        pieces[i] = Piece(pieces[i].start, pieces[i].end, c)
    if all(p.n_tokens <= limit for p in pieces):
        return pieces
    out: list[Piece] = []
    for p in pieces:
        out.extend([p] if p.n_tokens <= limit else _resplit(doc, tokenizer, p, limit))
    return out


def _resplit(doc: Document, tokenizer: Tokenizer, piece: Piece, limit: int) -> list[Piece]:
    start, end, count = piece.start, piece.end, piece.n_tokens
    budget = limit
    while True:
        budget = max(1, budget - (count - limit) - 1)
        sub = split_text(doc.text[start:end], tokenizer, limit=budget)
        spans = [(start + p.start, start + p.end) for p in sub]
        counts = tokenizer.count_batch([doc.text[s:e] for s, e in spans])
        if all(c <= limit for c in counts):
            return [Piece(s, e, c) for (s, e), c in zip(spans, counts, strict=True)]
        if budget == 1:
            raise CorruptDocument(doc.uri, f"text at characters {start}-{end} cannot be split into pieces "
                                           f"of at most {limit} tokens")
        count = max(counts)


def _make_chunks(doc: Document, pieces: list[Piece]) -> list[Chunk]:
    offsets = [p.offset for p in doc.pages]
    chunks = []
    for position, p in enumerate(pieces):
        chunks.append(Chunk.make(doc.doc_id, position, doc.text[p.start:p.end], char_start=p.start,
                                 char_end=p.end, page_start=_page(doc, offsets, p.start),
                                 page_end=_page(doc, offsets, p.end - 1), n_tokens=p.n_tokens))
    return chunks


def _page(doc: Document, offsets: list[int], char: int) -> int:
    if not offsets:
        return 0
    return doc.pages[max(0, bisect_right(offsets, char) - 1)].number
