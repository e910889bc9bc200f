"""What a PDF page's text looks like: its lines, their font, and the tables and headings they form.

pdfium's text (``get_text_range``) has one character per character index, lines ended by generated
``\\r\\n``, and a table row as one line whose cells are separated by a single generated space. What it
does not say, the character boxes and fonts do; this module asks for as few of them as it can:

- a line's font size, boldness and position from its first visible character;
- a line's cells: pdfium's text rectangles (one per run of a text object) say in one call whether a line
  has a gap wider than ``CELL_GAP`` times its font size (a word space is about a third of that, a table's
  column gap more); only such a line has the characters either side of each run of spaces measured,
  and a run that spans a wide gap separates two cells;
- a table is two or more consecutive lines of two or more cells (a short one-cell line between such
  lines, a row label like "Current liabilities", stays in it); its rows become " | "-joined lines and its
  header is its leading header-like rows (bold, or no numbers but years), else its first row;
- a heading is a short line, not in a table nor in the top or bottom margin, that does not end like a
  sentence, set larger than the page's body text or bold where the body is not; its level comes from its
  size relative to the body (level 4 is a bold line at body size).

A page whose text has more characters than pdfium counts (characters outside the BMP come as two UTF-16
units) keeps its plain text, without lines, tables or headings.
"""

from __future__ import annotations

import ctypes
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from ...types import Section, Table

CELL_GAP = 1.0  # a gap this many font sizes wide separates two table cells
MARGIN = 0.08  # lines in the top or bottom 8 % of the page are running headers or footers, never headings
_HEADING_WORDS = 16
_HEADING_CHARS = 120
_ROW_LABEL_WORDS = 8  # a one-cell line this short between table rows is a row label, not the table's end
_BOLD_NAMES = ("bold", "black", "heavy", "semibold", "demi")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_NUMERIC = re.compile(r"[$€£(]?[-–—+]?\d[\d,.]*%?\)?|[-–—]")
_YEAR = re.compile(r"(?:19|20)\d\d")
_SENTENCE_END = (".", ",", ";", ":", "!", "?")


@dataclass(frozen=True, slots=True)
class Line:
    """One line of a page: where its text starts in the page's text, its font, its position."""

    start: int
    text: str
    size: float = 0.0
    bold: bool = False
    top: float = 0.0  # the line's top, in points from the page's bottom
    cells: tuple[str, ...] = ()  # two or more when wide gaps split the line

    @property
    def end(self) -> int:
        return self.start + len(self.text)


@dataclass(frozen=True, slots=True)
class PageText:
    """A page's text and what was found in it (offsets into ``text``)."""

    text: str
    lines: tuple[Line, ...] = ()
    tables: tuple[Table, ...] = ()
    headings: tuple[Section, ...] = ()
    open_table: str = ""  # the header of a table that runs to the end of the page (it may go on)


def clean(raw: str) -> str:
    # pdfium marks soft hyphens as \x02 / \ufffe and pads with NULs.
    return raw.replace("\x02", "-").replace("\ufffe", "-").replace("\x00", "")


def plain_text(raw: str) -> str:
    """pdfium's page text with lines ended by ``\\n`` and no outer whitespace."""
    return clean(_LINE_BREAK.sub("\n", raw)).strip()


def read_page(textpage: Any, height: float, tables: bool = True, carried: str = "") -> PageText:
    """The page's lines, tables and headings. ``carried`` is the header of a table the previous page
    ended with: a table that opens this page without a header row of its own gets it."""
    raw = textpage.get_text_range()
    if len(raw) != textpage.count_chars():
        return PageText(plain_text(raw))
    probe = _Probe(textpage)
    lines = [_line(probe, raw, a, b) for a, b in _spans(raw)]
    blocks = _table_blocks(lines, height) if tables else []
    return _assemble(lines, blocks, height, carried)


class _Probe:
    """Character boxes and fonts from pdfium, with the ctypes buffers allocated once."""

    def __init__(self, textpage: Any) -> None:
        import pypdfium2.raw as pdfium_c

        self._c = pdfium_c
        self._tp = textpage.raw
        self._box = [ctypes.c_double() for _ in range(4)]
        self._refs = [ctypes.byref(v) for v in self._box]
        self._name = ctypes.create_string_buffer(128)
        self._flags = ctypes.c_int()

    def wide_gap(self, a: int, b: int, size: float) -> bool:
        """Whether characters [a, b) (one line) hold two text rectangles more than ``CELL_GAP`` apart."""
        n = self._c.FPDFText_CountRects(self._tp, a, b - a)
        previous_right = None
        for k in range(n):
            self._c.FPDFText_GetRect(self._tp, k, *self._refs)
            left, right = self._box[0].value, self._box[2].value
            if previous_right is not None and left - previous_right > CELL_GAP * max(size, 1.0):
                return True
            previous_right = right
        return False

    def box(self, i: int) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) of character ``i``."""
        self._c.FPDFText_GetCharBox(self._tp, i, *self._refs)
        return self._box[0].value, self._box[1].value, self._box[2].value, self._box[3].value

    def size(self, i: int) -> float:
        return float(self._c.FPDFText_GetFontSize(self._tp, i))

    def bold(self, i: int) -> bool:
        if self._c.FPDFText_GetFontWeight(self._tp, i) >= 600:
            return True
        self._c.FPDFText_GetFontInfo(self._tp, i, self._name, len(self._name), ctypes.byref(self._flags))
        name = self._name.value.decode("latin-1", "replace").lower()
        return any(word in name for word in _BOLD_NAMES)


def _spans(raw: str) -> Iterator[tuple[int, int]]:
    """[a, b) of each line of ``raw`` (line breaks excluded)."""
    pos = 0
    for m in _LINE_BREAK.finditer(raw):
        yield pos, m.start()
        pos = m.end()
    yield pos, len(raw)


def _line(probe: _Probe, raw: str, a: int, b: int) -> Line:
    text = clean(raw[a:b])
    first = next((i for i in range(a, b) if not raw[i].isspace()), -1)
    if first < 0:
        return Line(0, text)
    size = probe.size(first)
    return Line(0, text, size, probe.bold(first), probe.box(first)[3], _cells(probe, raw, a, b, size))


def _cells(probe: _Probe, raw: str, a: int, b: int, size: float) -> tuple[str, ...]:
    """The line's cells when a run of spaces in it spans a gap wider than ``CELL_GAP`` font sizes."""
    if " " not in raw[a:b] or not probe.wide_gap(a, b, size):
        return ()
    cells: list[str] = []
    cell_start = a
    i = a
    while i < b:
        if raw[i] != " ":
            i += 1
            continue
        j = i
        while j < b and raw[j] == " ":
            j += 1
        if i > a and j < b and probe.box(j)[0] - probe.box(i - 1)[1] > CELL_GAP * max(size, 1.0):
            cells.append(clean(raw[cell_start:i]).strip())
            cell_start = j
        i = j
    if not cells:
        return ()
    cells.append(clean(raw[cell_start:b]).strip())
    return tuple(c for c in cells if c)


def _table_blocks(lines: Sequence[Line], height: float) -> list[tuple[int, int]]:
    """[first, last] line indexes of each table: runs of two or more multi-cell lines (running headers
    and footers in the margins are not rows)."""
    blocks: list[tuple[int, int]] = []

    def row(k: int) -> bool:
        return len(lines[k].cells) >= 2 and not _in_margin(lines[k], height)

    i = 0
    while i < len(lines):
        if not row(i):
            i += 1
            continue
        j = i
        while j + 1 < len(lines) and (row(j + 1) or _row_label(lines, j + 1)):
            j += 1
        if sum(row(k) for k in range(i, j + 1)) >= 2:
            blocks.append((i, j))
        i = j + 1
    return blocks


def _row_label(lines: Sequence[Line], k: int) -> bool:
    """A short one-cell line with table rows on both sides."""
    words = len(lines[k].text.split())
    return (0 < words <= _ROW_LABEL_WORDS and k + 1 < len(lines) and len(lines[k + 1].cells) >= 2
            and not lines[k].text.rstrip().endswith("."))


def _header_like(line: Line) -> bool:
    cells = line.cells or (line.text,)
    numbers = [c for c in cells if _NUMERIC.fullmatch(c.strip()) and not _YEAR.fullmatch(c.strip())]
    return line.bold or not numbers


def _row(line: Line) -> str:
    return " | ".join(line.cells) if len(line.cells) >= 2 else line.text.strip()


def _assemble(lines: list[Line], blocks: list[tuple[int, int]], height: float, carried: str) -> PageText:
    """The page text (table rows re-joined with " | "), with every line's offset, tables and headings."""
    texts = [line.text for line in lines]
    in_table = [False] * len(lines)
    for first, last in blocks:
        for k in range(first, last + 1):
            texts[k] = _row(lines[k])
            in_table[k] = True
    joined = "\n".join(texts)
    lead = len(joined) - len(joined.lstrip())
    text = joined.strip()
    placed: list[Line] = []
    pos = -lead
    for line, t in zip(lines, texts, strict=True):
        placed.append(Line(max(pos, 0), t, line.size, line.bold, line.top, line.cells))
        pos += len(t) + 1
    found = _tables(placed, blocks, carried, height)
    tables = tuple(f.table(text) for f in found)
    for k, line in enumerate(placed):  # header lines above a table's first row are not headings either
        in_table[k] = in_table[k] or any(t.start <= line.start < t.end for t in tables)
    headings = _headings(placed, in_table, height)
    runs_on = bool(blocks) and not any(_body(line, height) for line in placed[blocks[-1][1] + 1:])
    return PageText(text, tuple(placed), tables, headings, tables[-1].header if runs_on else "")


@dataclass(frozen=True, slots=True)
class _Found:
    """A table found on a page: its header is the text [start, header_end), or ``carried``."""

    start: int
    end: int
    header_end: int = 0
    carried: str = ""

    def table(self, text: str) -> Table:
        return Table(self.start, self.end, self.carried or text[self.start:self.header_end])


def _tables(lines: Sequence[Line], blocks: list[tuple[int, int]], carried: str,
            height: float) -> list[_Found]:
    tables = []
    for n, (first, last) in enumerate(blocks):
        above = _header_above(lines, first, blocks[n - 1][1] if n else -1, height)
        head = 0
        while head < min(2, last - first) and _header_like(lines[first + head]):
            head += 1
        end = lines[last].start + len(_row(lines[last]))
        opens_page = n == 0 and not any(_body(line, height) for line in lines[:first - above])
        if head == 0 and carried and opens_page:
            # Rows going on from the page before (a one-cell line above them is a wrapped row label).
            tables.append(_Found(lines[first - above].start, end, carried=carried))
            continue
        bottom = lines[first + head - 1] if head or above else lines[first]
        tables.append(_Found(lines[first - above].start, end, header_end=bottom.start + len(_row(bottom))))
    return tables


def _header_above(lines: Sequence[Line], first: int, floor: int, height: float) -> int:
    """How many lines just above a table's first row are its header too: a header whose cells wrap
    ("Year Ended / December 31,") or a title row, set like the rows and short (at most 3 lines)."""
    size = lines[first].size
    count = 0
    for k in range(first - 1, max(floor, first - 4), -1):
        line = lines[k]
        words = line.text.split()
        if not words or len(words) > _ROW_LABEL_WORDS or line.text.rstrip().endswith(".") \
                or _in_margin(line, height):
            break
        if size and line.size and abs(line.size - size) > 0.6:
            break
        count += 1
    return count


def _body(line: Line, height: float) -> bool:
    """A line of the page's body: text outside the top and bottom margins."""
    return bool(line.text.strip()) and not _in_margin(line, height)


def _in_margin(line: Line, height: float) -> bool:
    return height > 0 and line.top > 0 and (line.top > height * (1 - MARGIN) or line.top < height * MARGIN)


def body_size(lines: Sequence[Line]) -> float:
    """The font size most of the page's characters are set in."""
    sizes: Counter[float] = Counter()
    for line in lines:
        if line.size:
            sizes[round(line.size, 1)] += len(line.text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def _headings(lines: Sequence[Line], in_table: Sequence[bool], height: float) -> tuple[Section, ...]:
    prose = [line for k, line in enumerate(lines) if not in_table[k] and not _in_margin(line, height)]
    body = body_size(prose or lines)  # tables are often set smaller than the body: not the reference
    body_bold = _mostly_bold(prose or lines)
    found: list[Section] = []
    previous: Line | None = None
    for k, line in enumerate(lines):
        level = 0 if in_table[k] or _in_margin(line, height) else heading_level(line, body, body_bold)
        if not level:
            previous = None
            continue
        title = " ".join(line.text.split())
        start = line.start
        if previous is not None and abs(previous.size - line.size) < 0.1 and previous.bold == line.bold:
            last = found.pop()  # one heading set on two lines
            title, start = f"{last.title} {title}", last.start
        found.append(Section(start, level, title))
        previous = line
    return tuple(found)


def _mostly_bold(lines: Sequence[Line]) -> bool:
    bold = sum(len(line.text) for line in lines if line.bold)
    return bold * 2 > sum(len(line.text) for line in lines)


def heading_level(line: Line, body: float, body_bold: bool) -> int:
    """1-3 for a line set larger than the body text, 4 for a bold one at body size, 0 for no heading."""
    text = line.text.strip()
    if not (2 < len(text) <= _HEADING_CHARS and len(text.split()) <= _HEADING_WORDS) or not body:
        return 0
    if text.endswith(_SENTENCE_END) or not any(c.isalpha() for c in text) or text[0].islower():
        return 0
    ratio = line.size / body
    if ratio >= 1.5:
        return 1
    if ratio >= 1.25:
        return 2
    if ratio >= 1.1:
        return 3
    return 4 if line.bold and not body_bold and ratio > 0.95 and not line.cells else 0
