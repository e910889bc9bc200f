"""Small text helpers shared by query transformation, PRF and the answer generators: word terms without
stopwords, a sentence splitter, and ``passages``, which cuts a chunk into the pieces an answer can quote.

A chunk is prose, or structured text that a sentence splitter mangles: Markdown headings, ``key: value``
records and lists (fact sheets, configuration docs), and table rows (``a | b | c``, how loaders write
tables). ``passages`` keeps each of these whole: a prose block becomes its sentences, a structured block
one passage per line, and every passage carries the headings above it (and a table row its column
header), because a line like ``name: Jerusalem`` means something only under ``## Capital``.
Pure Python and cheap: they run inside the latency budget."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# A compact English stopword list (the usual SMART/Lucene core). Kept here, not downloaded, so the
# default path is offline and deterministic.
STOPWORDS = frozenset(
    ["a", "about", "above", "after", "again", "against", "all", "also", "am", "an", "and", "any", "are", "aren't", "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "can't", "cannot", "could", "couldn't", "did", "didn't", "do", "does", "doesn't", "doing", "don't", "down", "during", "each", "few", "for", "from", "further", "had", "hadn't", "has", "hasn't", "have", "haven't", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i", "if", "in", "into", "is", "isn't", "it", "it's", "its", "itself", "just", "let's", "me", "more", "most", "mustn't", "my", "myself", "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "ought", "our", "ours", "ourselves", "out", "over", "own", "same", "shan't", "she", "should", "shouldn't", "so", "some", "such", "than", "that", "that's", "the", "their", "theirs", "them", "themselves", "then", "there", "there's", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up", "upon", "very", "via", "was", "wasn't", "we", "were", "weren't", "what", "what's", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "won't", "would", "wouldn't", "you", "your", "yours", "yourself", "yourselves", "vs", "versus", "compare", "compared", "comparison", "difference", "between", "does", "do", "did", "tell", "explain", "describe"]
)

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-']*")
# A sentence ends at . ! or ? followed by space and an upper-case letter, digit or quote. Initials and a
# few abbreviations do sit before a capital ("F. Scott Fitzgerald", "Dr. Smith", "c. 1900"): a piece that
# ends in one is glued back to the next. Good enough for quoting, not for parsing.
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
_NO_END = re.compile(r"(?:^|[\s(\"'])(?:[A-Z]|Mr|Mrs|Ms|Dr|Prof|Sr|Jr|St|Mt|No|Nos|Fig|Figs|Vol|Jan|Feb|Mar|Apr|Jun|"
                     r"Jul|Aug|Sep|Sept|Oct|Nov|Dec|Inc|Ltd|Co|Corp|vs|approx|ca?|cf|e\.g|i\.e|al)\.$")


def words(text: str) -> list[str]:
    """Lower-cased word tokens, stopwords included."""
    return [w.lower().strip("-'") for w in _WORD.findall(text)]


def terms(text: str) -> list[str]:
    """Content terms: lower-cased words that are not stopwords and not one character long."""
    return [w for w in words(text) if len(w) > 1 and w not in STOPWORDS]


_SUFFIXES = ("ations", "ation", "ings", "ing", "ies", "ed", "es", "s")
_SYMBOLS = frozenset("()[]{}=<>#;:_*/\\|`$@%^~+")


def stem(word: str) -> str:
    """A light suffix stripper (tasks -> task, cancelled/cancelling -> cancel): enough to match a query's
    words with a sentence's, nothing like a real stemmer."""
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 4:
            word = word[: -len(suf)] + ("y" if suf == "ies" else "")
            if suf in ("ed", "ing", "ings") and len(word) > 4 and word[-1] == word[-2] and word[-1] not in "aeiou":
                word = word[:-1]  # cancell -> cancel, stopp -> stop
            break
    return word


def stems(text: str) -> list[str]:
    """Stemmed content terms."""
    return [stem(t) for t in terms(text)]


# Lines of code that survive sentence splitting: comments/prompts, assignments, braces, definitions, a
# statement's closing semicolon (a semicolon inside prose or a list of places is not code).
_CODE = re.compile(r"^\s*[#>$]|\w\s*==?\s*[\w\"'(\[]|[{}]|;\s*$|\bdef \w+\(")


def looks_like_code(text: str) -> bool:
    return bool(_CODE.search(text))


def symbol_share(text: str) -> float:
    """Share of code-like symbols among the non-space characters: high for code, near 0 for prose."""
    chars = [c for c in text if not c.isspace()]
    return sum(c in _SYMBOLS for c in chars) / len(chars) if chars else 0.0


def split_sentences(text: str) -> list[str]:
    """One paragraph (whitespace folded) as sentences; see ``_SENT_END`` and ``_NO_END``."""
    out: list[str] = []
    for piece in _SENT_END.split(" ".join(text.split())):
        if out and _NO_END.search(out[-1]):
            out[-1] = f"{out[-1]} {piece}"
        elif piece.strip():
            out.append(piece.strip())
    return out


def sentences(text: str) -> list[str]:
    """Split text into sentences, paragraph by paragraph (blank lines); blank pieces dropped."""
    return [sent for block in re.split(r"\n\s*\n", text) for sent in split_sentences(block)]


def dedupe(items: Iterable[str]) -> list[str]:
    """Keep the first of case/space-insensitive duplicates, in order."""
    seen: set[str] = set()
    out: list[str] = []
    for it in items:
        key = " ".join(it.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.append(it)
    return out


# ------------------------------------------------------------------------------------------------ passages

PassageKind = Literal["sentence", "line", "row"]
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
# "key: value", "- item: x"; a line ending in a colon introduces what follows and is prose
_RECORD = re.compile(r"^(?:[-*\u2022]\s+|\d{1,3}[.)]\s+)?[^:|]{1,60}:\s+\S")
_LIST_ITEM = re.compile(r"^(?:[-*\u2022]|\d{1,3}[.)])\s+\S")
_TITLE_WORDS = 10  # a lone line this short, without a full stop, titles what follows
_RULE = re.compile(r"^[\s|:\-]+$")  # a Markdown table's |---|:--:| line


@dataclass(frozen=True, slots=True)
class Passage:
    """A quotable piece of a chunk. ``text`` is verbatim (whitespace folded); ``headings`` are the headings it
    sits under, outermost first; ``header`` is a table row's column header row; passages of one ``block``
    (a run of lines between blank lines) that follow each other are adjacent in the chunk."""

    text: str
    kind: PassageKind
    block: int
    headings: tuple[str, ...] = ()
    header: str = ""

    @property
    def context(self) -> str:
        """What the passage means in: its headings and column header, as one line."""
        return " ".join([*self.headings, self.header]).strip()


_TITLE_LEVEL = 7  # below any Markdown heading: a title line opened under "## Section" stays inside it


def _heading_of(line: str, alone: bool) -> tuple[int, str] | None:
    """``(level, title)`` when a line is a heading: Markdown ``#``s, or a short line that is a whole block
    by itself and does not end like a sentence (a document or table title)."""
    m = _HEADING.match(line)
    if m:
        return len(m.group(1)), m.group(2)
    if alone and len(line.split()) <= _TITLE_WORDS and not line.endswith((".", "!", "?", ":", ";", ",")):
        return _TITLE_LEVEL, line
    return None


def _open(path: list[tuple[int, str]], head: tuple[int, str]) -> list[tuple[int, str]]:
    """The heading path once ``head`` opens: deeper or equal levels close; a repeated title is kept once."""
    kept = [h for h in path if h[0] < head[0] and h[1] != head[1]]
    return [*kept, head]


def _is_table(lines: list[str]) -> bool:
    return len(lines) >= 2 and sum("|" in ln for ln in lines) >= 0.8 * len(lines)


def _is_records(lines: list[str], under_heading: bool) -> bool:
    """Lines that each stand alone: ``key: value`` records or list items (a wrapped paragraph is not). One
    such line counts only under a heading (``## Internet users`` / ``percent of population: 58%``)."""
    hits = sum(bool(_RECORD.match(ln) or _LIST_ITEM.match(ln)) for ln in lines)
    return (len(lines) >= 2 or under_heading) and hits >= 0.6 * len(lines)


def _short_value(line: str) -> bool:
    """A heading's whole body when it is a value, not a paragraph: ``## Internet country code`` / ``.ni``."""
    return len(line.split()) <= _TITLE_WORDS and not line.endswith((".", "!", "?"))


def _table_row(line: str) -> str:
    """A row's cells joined by `` | `` (outer pipes and padding dropped)."""
    return " | ".join(cell.strip() for cell in line.strip().strip("|").split("|")).strip()


def passages(text: str) -> list[Passage]:
    """The chunk as passages, in reading order (see the module docstring)."""
    out: list[Passage] = []
    path: list[tuple[int, str]] = []  # open headings, outermost first
    for block_no, block in enumerate(re.split(r"\n\s*\n", text)):
        lines = [ln.strip() for ln in block.splitlines() if ln.strip()]
        alone, stripped = len(lines) == 1, False
        while lines and (head := _heading_of(lines[0], alone)) is not None:
            path, lines, stripped = _open(path, head), lines[1:], True
        if not lines:
            continue
        headings = tuple(t for _, t in path)
        if _is_table(lines):
            header = _table_row(lines[0])
            out.extend(Passage(_table_row(ln), "row", block_no, headings, header) for ln in lines[1:]
                       if not _RULE.match(ln))
        elif _is_records(lines, bool(path)) or (stripped and len(lines) == 1 and _short_value(lines[0])):
            out.extend(Passage(" ".join(ln.split()), "line", block_no, headings) for ln in lines)
        else:
            out.extend(Passage(s, "sentence", block_no, headings) for s in split_sentences(" ".join(lines)))
    return out
