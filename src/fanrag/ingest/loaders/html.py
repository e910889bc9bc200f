"""HTML with selectolax (lexbor): the page's own text without navigation and boilerplate.

The content root is ``<main>``, else a lone ``<article>``, else ``[role=main]``, else ``<body>``;
scripts, styles, navigation, headers, footers, asides and forms are dropped. Block elements become
paragraphs (headings stay as their own paragraph), list items and table rows become lines, and ``<pre>``
keeps its line breaks and indentation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...errors import UnsupportedFormat
from ...ids import document_id
from ...types import Document
from ._common import decode_utf8, hash_file, read_bytes, require_text

_DROP = ("script", "style", "noscript", "template", "nav", "aside", "form", "footer", "svg", "iframe",
         "button", "select", "[role=navigation]", "[role=search]", "[role=contentinfo]",
         "[hidden]", "a.headerlink")
_DROP_OUTSIDE_CONTENT = ("header", "[role=banner]")
_BLOCKS = frozenset({"p", "div", "section", "article", "main", "body", "h1", "h2", "h3", "h4", "h5", "h6",
                     "ul", "ol", "dl", "table", "blockquote", "figure", "figcaption", "address", "hr",
                     "details", "summary", "caption", "header", "center", "fieldset", "thead", "tbody"})
_LINES = frozenset({"li", "tr", "dt", "dd", "br", "option"})
_CELLS = frozenset({"td", "th"})

# Sentinels in the flattened text: control characters that are removed from the page's own text first.
_BLOCK, _LINE, _PRE, _PRE_NL = "\x1e", "\x1f", "\x1c", "\x1d"
_NO_SENTINELS = str.maketrans("", "", _BLOCK + _LINE + _PRE + _PRE_NL)
_BLOCK_SPLIT = re.compile(f"[{_BLOCK}{_LINE}]*{_BLOCK}[{_BLOCK}{_LINE}]*")
_LINE_SPLIT = re.compile(f"{_LINE}+")
_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


class HtmlLoader:
    name = "html"
    splittable = False

    def units(self, path: Path, *, password: str | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None) -> list[Document]:
        text, title = html_to_text(_decode(path, read_bytes(path)))
        require_text(path, text, "no text after removing markup and navigation")
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=text, title=title or path.stem, mime="text/html")]


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


def html_to_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML page; title is "" when the page has neither <title> nor <h1>."""
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(html)
    title = _first_text(tree, "title") or _first_text(tree, "h1")
    root = _content_root(tree)
    if root is None:
        return "", title
    for sel in _DROP + (_DROP_OUTSIDE_CONTENT if root.tag == "body" else ()):
        for node in root.css(sel):
            node.decompose()
    return _assemble(_flatten(root)), title


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
    """Document-order text with sentinels for block and line breaks. Iterative: deep pages must not hit
    the recursion limit."""
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
        elif tag in _BLOCKS or tag in _LINES or tag in _CELLS:
            mark = _BLOCK if tag in _BLOCKS else _LINE if tag in _LINES else " "
            out.append(mark)
            stack.append(mark)
            stack.extend(reversed(list(node.iter(include_text=True))))
        elif not tag.startswith("-") or tag == "-document":
            stack.extend(reversed(list(node.iter(include_text=True))))
    return out


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
            blocks.append(text)
    return "\n\n".join(blocks)
