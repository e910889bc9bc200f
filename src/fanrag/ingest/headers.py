"""Chunk headers: the context a chunk is embedded and indexed with, stored apart from its text.

A chunk cut from the middle of a long document loses what a reader would see around it: which document,
which section, which page, and for a table row, what its columns are. Its header puts that back::

    10-K 2019 › Item 7. Management's Discussion › Liquidity · page 41
    Fiscal year | 2019 | 2018          <- only when the chunk holds rows of a table but not its header line

The title comes first (the most specific words for BM25 and the strongest signal for the embedder; left
out of a chunk that opens with it), then
the section path at the chunk's start (enclosing headings, outermost first), then the page. A header
longer than its token budget loses middle section levels first, then characters from its end.
Citations quote ``chunk.text`` only, so a header never appears as evidence.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import replace

from ..embed.base import Tokenizer
from ..types import Chunk, Document, Section, Table

SEP = " › "


def has_context(doc: Document) -> bool:
    """Whether a document has anything to put in a header."""
    return bool(doc.title.strip() or doc.sections or doc.pages or doc.tables)


def add_headers(doc: Document, chunks: Sequence[Chunk], tokenizer: Tokenizer, budget: int) -> list[Chunk]:
    starts = [s.start for s in doc.sections]
    out = []
    for ch in chunks:
        path = section_path(doc.sections, starts, ch.char_start)
        table = cut_table(doc.text, doc.tables, ch)
        header = fit(compose(doc.title, path, ch.page_start, table, says_title(ch.text, doc.title)), tokenizer, budget)
        out.append(replace(ch, header=header))
    return out


def section_path(sections: Sequence[Section], starts: Sequence[int], char: int) -> list[str]:
    """Titles of the sections enclosing ``char``, outermost first (a heading closes every deeper one)."""
    path: list[Section] = []
    for s in sections[: bisect_right(starts, char)]:
        while path and path[-1].level >= s.level:
            path.pop()
        path.append(s)
    return [" ".join(s.title.split()) for s in path if s.title.strip()]


def cut_table(text: str, tables: Sequence[Table], ch: Chunk) -> str:
    """The header of a table this chunk holds rows of without holding the table's header line. A table
    continued from an earlier page does not start with its header (the loader carries it over): then
    every chunk of it gets the header."""
    for t in tables:
        if not (t.start < ch.char_end and ch.char_start < t.end and t.header.strip()):
            continue
        opens_with_header = text.startswith(t.header, t.start)
        if not opens_with_header or ch.char_start >= t.start + len(t.header):
            return t.header.strip()
    return ""


def says_title(text: str, title: str) -> bool:
    """Whether the chunk opens with the document's title already (a JSONL record's body, a Markdown file's
    first heading, a title page): a header would only repeat it, which on SciFact and ArguAna weighed the
    title twice and cost nDCG@10 (bench/results/quality-title-twice.json against quality.json)."""
    wanted = " ".join(title.split()).casefold()
    opening = " ".join(text[: 2 * len(title) + 32].split()).casefold().lstrip("#*_=>-| \t")
    return bool(wanted) and re.match(re.escape(wanted) + r"(?!\w)", opening) is not None  # whole words


def compose(title: str, path: Sequence[str], page: int, table: str = "", title_in_text: bool = False) -> str:
    title = " ".join(title.split())
    parts = [title] if title and not title_in_text else []
    parts += [p for p in path if p != title]  # a Markdown file's first heading is often its title
    line = " · ".join(x for x in (SEP.join(parts), f"page {page}" if page else "") if x)
    return f"{line}\n{table}".strip() if table else line.strip()


def fit(header: str, tokenizer: Tokenizer, budget: int) -> str:
    """``header`` cut to at most ``budget`` tokens: middle section levels go first, then the tail."""
    if not header or tokenizer.count(header) <= budget:
        return header
    first, _, rest = header.partition("\n")
    parts = first.split(SEP)
    while len(parts) > 2:
        del parts[1]  # the outermost (title) and innermost levels say the most
        candidate = SEP.join(parts) + (f"\n{rest}" if rest else "")
        if tokenizer.count(candidate) <= budget:
            return candidate
    words = (SEP.join(parts) + (f"\n{rest}" if rest else "")).split(" ")
    while words and tokenizer.count(" ".join(words)) > budget:
        words = words[: max(1, len(words) * 3 // 4)] if len(words) > 1 else []
    return " ".join(words)
