"""HTML with selectolax (lexbor): the page's own text without navigation and boilerplate.

The content root is ``<main>``, else a lone ``<article>``, else ``[role=main]``, else ``<body>``;
scripts, styles, navigation, headers, footers, asides and forms are dropped. Block elements become
paragraphs (headings stay as their own paragraph), list items become lines, and ``<pre>`` keeps its line
breaks and indentation. A table becomes a paragraph of rows, one per line, cells joined by " | ".

Structure: ``<h1>``-``<h6>`` are Sections of levels 1-6; each table (not nested in another) is a Table
whose header is its ``<thead>`` rows, else its leading all-``<th>`` rows, else its first row. Both are
located by marker characters that ride through the flattening and are removed at the end, so their
offsets are those of the final text.

Bounds, before parsing: the page's size (``ingest.max_html_mb``) and its element nesting
(``max_html_depth``, counted by a tag scanner): lexbor's time grows with the square of the depth, and
100,000 nested ``<div>`` took 45 s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import UnsupportedFormat
from ...ids import document_id
from ...types import Document, Section, Table
from ._common import decode_utf8, hash_file, read_bytes, require_text
from .limits import MIB, exceeded, resolve, size

if TYPE_CHECKING:
    from ...settings import IngestSettings

_DROP = ("script", "style", "noscript", "template", "nav", "aside", "form", "footer", "svg", "iframe",
         "button", "select", "[role=navigation]", "[role=search]", "[role=contentinfo]",
         "[hidden]", "a.headerlink")
_DROP_OUTSIDE_CONTENT = ("header", "[role=banner]")
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_BLOCKS = frozenset({"p", "div", "section", "article", "main", "body", *_HEADINGS,
                     "ul", "ol", "dl", "table", "blockquote", "figure", "figcaption", "address", "hr",
                     "details", "summary", "caption", "header", "center", "fieldset"})
_LINES = frozenset({"li", "tr", "dt", "dd", "br", "option"})
_CELLS = frozenset({"td", "th"})

# Sentinels in the flattened text: control characters that are removed from the page's own text first.
_BLOCK, _LINE, _PRE, _PRE_NL = "\x1e", "\x1f", "\x1c", "\x1d"
# Markers of where headings and tables sit, removed (and their positions kept) once the text is final:
# a heading of level n opens with chr(n) and closes with _H_END; a table opens with _T_START, its header
# rows end at _T_HEAD and its rows at _T_END.
_H_END, _T_START, _T_HEAD, _T_END = "\x07", "\x0e", "\x0f", "\x10"
_OPENERS = "".join(chr(n) for n in range(1, 7)) + _T_START
_CLOSERS = _H_END + _T_HEAD + _T_END
_NO_SENTINELS = str.maketrans("", "", _BLOCK + _LINE + _PRE + _PRE_NL + _OPENERS + _CLOSERS)
_BLOCK_SPLIT = re.compile(f"[{_BLOCK}{_LINE}]*{_BLOCK}[{_BLOCK}{_LINE}]*")
_LINE_SPLIT = re.compile(f"{_LINE}+")
_MARKER = re.compile(f"[{_OPENERS}{_CLOSERS}]")
_TIGHT = re.compile(f"(?<=[{_OPENERS}]) +| +(?=[{_CLOSERS}])")  # no space inside a marker pair
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)

# The nesting scanner: comments and raw-text elements are skipped whole, then tags are counted.
_TAG = re.compile(r"<!--.*?-->|<(script|style|textarea|title)\b[^>]*>.*?</\1\s*>|<(/?)([A-Za-z][\w:.-]*)[^>]*?(/?)>",
                  re.DOTALL | re.IGNORECASE)
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                   "source", "track", "wbr", "keygen", "frame", "basefont", "isindex", "command"})
# Elements whose end tag may be left out: a new one closes the open one (or its parent does).
_IMPLIED_END = frozenset({"p", "li", "dt", "dd", "tr", "td", "th", "option", "optgroup", "thead", "tbody",
                          "tfoot", "colgroup", "rt", "rp", "caption"})
_CLOSE_SEARCH = 16  # how far down the open elements an end tag looks for its start tag


class HtmlLoader:
    name = "html"
    splittable = False

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None,
             limits: IngestSettings | None = None) -> list[Document]:
        limits = resolve(limits)
        data = read_bytes(path)
        if len(data) > limits.max_html_mb * MIB:
            raise exceeded(path, f"HTML page of {size(len(data))}", "max_html_mb", limits.max_html_mb, " MiB")
        html = _decode(path, data)
        depth = nesting_depth(html, limits.max_html_depth)
        if depth > limits.max_html_depth:
            raise exceeded(path, f"elements nested more than {limits.max_html_depth:,} deep", "max_html_depth",
                           limits.max_html_depth)
        page = html_page(html)
        require_text(path, page.text, "no text after removing markup and navigation")
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=page.text, title=page.title or path.stem, mime="text/html",
                         sections=page.sections, tables=page.tables)]


def _decode(path: Path, data: bytes) -> str:
    """UTF-8, or the charset the page declares in its first 2 KB (pages saved from the web often say
    ``<meta charset="windows-1252">``: there the encoding is stated, not guessed)."""
    try:
        return decode_utf8(path, data)
    except UnsupportedFormat:
        m = _CHARSET.search(data[:2048])
        if m is None:
            raise
        try:
            return data.decode(m.group(1).decode("ascii")).replace("\r\n", "\n")
        except (LookupError, UnicodeDecodeError):
            raise UnsupportedFormat(str(path), f"declares charset {m.group(1).decode('ascii', 'replace')!r} "
                                               "but does not decode with it") from None


def nesting_depth(html: str, stop: int) -> int:
    """How deep the page's elements nest, as a parser would build them (about: end tags the parser would
    imply are implied here only for the usual cases); counting stops once past ``stop``."""
    open_: list[str] = []
    deepest = 0
    for m in _TAG.finditer(html):
        name = m.group(3)
        if name is None:  # a comment or a raw-text element
            continue
        name = name.lower()
        if name in _VOID or m.group(4):
            continue
        if m.group(2):  # an end tag closes its start tag and everything opened after it
            for i in range(len(open_) - 1, max(-1, len(open_) - 1 - _CLOSE_SEARCH), -1):
                if open_[i] == name:
                    del open_[i:]
                    break
            continue
        if name in _IMPLIED_END and name in open_[-3:]:
            del open_[len(open_) - 1 - open_[::-1].index(name):]
        open_.append(name)
        deepest = max(deepest, len(open_))
        if deepest > stop:
            break
    return deepest


@dataclass(frozen=True, slots=True)
class HtmlPage:
    """A page's text, title ("" when it has neither <title> nor <h1>), headings and tables."""

    text: str
    title: str
    sections: tuple[Section, ...] = ()
    tables: tuple[Table, ...] = ()


def html_page(html: str) -> HtmlPage:
    """The page's text without navigation and boilerplate, its title, headings and tables."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title = _first_text(tree, "title") or _first_text(tree, "h1")
    root = _content_root(tree)
    if root is None:
        return HtmlPage("", title)
    for sel in _DROP + (_DROP_OUTSIDE_CONTENT if root.tag == "body" else ()):
        for node in root.css(sel):
            node.decompose()
    return _structure(_assemble(_flatten(root)), title)


def _first_text(tree: Any, selector: str) -> str:
    node = tree.css_first(selector)
    return " ".join(node.text(deep=True).split()) if node is not None else ""


def _content_root(tree: Any) -> Any:
    main = tree.css("main")
    if len(main) == 1:
        return main[0]
    articles = tree.css("article")
    if len(articles) == 1:
        return articles[0]
    role_main = tree.css_first("[role=main]")
    return role_main if role_main is not None else tree.body


def _flatten(root: Any) -> list[str]:
    """Document-order text with sentinels for block and line breaks, and markers around headings and
    tables. Iterative: deep pages must not hit the recursion limit."""
    out: list[str] = []
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            out.append(node)
            continue
        tag = node.tag
        if tag == "-text":
            out.append(_spaced((node.text_content or "").translate(_NO_SENTINELS)))
        elif tag == "pre":
            body = node.text(deep=True).translate(_NO_SENTINELS).replace("\r\n", "\n").replace("\n", _PRE_NL)
            out.extend((_BLOCK, _PRE, body, _BLOCK))
        elif tag == "table":
            out.extend((_BLOCK, *_table(node), _BLOCK))
        elif tag in _HEADINGS and node.text(deep=True).strip():
            out.extend((_BLOCK, chr(_HEADINGS[tag])))
            stack.extend((_BLOCK, _H_END))
            stack.extend(reversed(list(node.iter(include_text=True))))
        elif tag in _BLOCKS or tag in _LINES or tag in _CELLS:
            mark = _BLOCK if tag in _BLOCKS else _LINE if tag in _LINES else " "
            out.append(mark)
            stack.append(mark)
            stack.extend(reversed(list(node.iter(include_text=True))))
        elif not tag.startswith("-") or tag == "-document":
            stack.extend(reversed(list(node.iter(include_text=True))))
    return out


def _table(table: Any) -> list[str]:
    """A table as its caption's paragraph, then its non-empty rows as lines (cells joined by " | "),
    between table markers. A table nested in a cell is part of that cell's text."""
    caption = table.css_first("caption")
    rows = [(line, is_head) for line, is_head in (_row(tr) for tr in _own_rows(table)) if line]
    if not rows:
        return [_text(caption)] if caption is not None else []
    n_head = sum(1 for _ in takewhile(bool, (is_head for _, is_head in rows))) or 1
    lines = [line for line, _ in rows]
    lines[n_head - 1] += _T_HEAD
    above = [_text(caption), _BLOCK] if caption is not None else []
    return [*above, _T_START, _LINE.join(lines), _T_END]


def _own_rows(table: Any) -> list[Any]:
    """The table's rows, not those of tables nested in its cells."""
    return [tr for tr in table.css("tr") if _owner(tr) == table.mem_id]


def _owner(node: Any) -> int:
    parent = node.parent
    while parent is not None and parent.tag != "table":
        parent = parent.parent
    return parent.mem_id if parent is not None else -1


def _row(tr: Any) -> tuple[str, bool]:
    """(cells joined by " | ", whether it is a header row: in <thead>, or all of its cells are <th>)."""
    cells = [c for c in tr.iter() if c.tag in _CELLS]
    line = " | ".join(_text(c) for c in cells).strip(" |")
    in_head = tr.parent is not None and tr.parent.tag == "thead"
    return line, in_head or (bool(cells) and all(c.tag == "th" for c in cells))


def _text(node: Any) -> str:
    return " ".join(node.text(deep=True).translate(_NO_SENTINELS).split())


def _spaced(text: str) -> str:
    # Collapse a text node's whitespace but keep one space at its edges: "a <b>bold</b> word"; a
    # whitespace-only node between two inline elements is a word break.
    if not text or text.isspace():
        return " " if text else ""
    core = " ".join(text.split())
    return (" " if text[:1].isspace() else "") + core + (" " if text[-1:].isspace() else "")


def _assemble(parts: list[str]) -> str:
    blocks = []
    for block in _BLOCK_SPLIT.split("".join(parts)):
        if block.startswith(_PRE):
            lines = [ln.rstrip() for ln in block[1:].replace(_LINE, "\n").split(_PRE_NL)]
            text = "\n".join(lines).strip("\n")
        else:
            text = "\n".join(ln for ln in (" ".join(x.split()) for x in _LINE_SPLIT.split(block)) if ln)
        if text.strip():
            blocks.append(_TIGHT.sub("", text))
    return "\n\n".join(blocks)


def _structure(marked: str, title: str) -> HtmlPage:
    """Remove the markers from ``marked``; where they were becomes the Sections and Tables."""
    pieces: list[str] = []
    found: list[tuple[str, int]] = []  # (marker, its position in the clean text)
    pos = last = 0
    for m in _MARKER.finditer(marked):
        pieces.append(marked[last:m.start()])
        pos += m.start() - last
        last = m.end()
        found.append((m.group(), pos))
    pieces.append(marked[last:])
    text = "".join(pieces)
    sections: list[Section] = []
    tables: list[Table] = []
    for (a, start), (b, head_end), (c, end) in zip(found, found[1:] + [("", 0)], found[2:] + [("", 0)] * 2):
        if a in _OPENERS[:-1] and b == _H_END:
            sections.append(Section(start, ord(a), " ".join(text[start:head_end].split())))
        elif a == _T_START and b == _T_HEAD and c == _T_END:
            tables.append(Table(start, end, text[start:head_end]))
    return HtmlPage(text, title, tuple(sections), tuple(tables))
