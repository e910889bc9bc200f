"""Markdown, kept mostly as is: the text is already readable and its headings are useful context.
YAML front matter moves into metadata (flat ``key: value`` pairs; nested YAML is kept as its raw text
so no YAML parser is needed); the title is front matter ``title``, else the first H1, else the name.

Structure, read line by line outside code fences: ATX (``## T``) and setext (``T`` over ``===`` or
``---``) headings are Sections; a pipe table (a header row, then a delimiter row such as ``|---|:--:|``,
then its rows) is a Table whose header is the header row as written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...ids import document_id
from ...types import Document, Section, Table
from ._common import hash_file, read_text, require_text

if TYPE_CHECKING:
    from ...settings import IngestSettings

_FRONT = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_KEY = re.compile(r"^([A-Za-z_][\w\-]*)[ \t]*:[ \t]*(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_DELIMITER_ROW = re.compile(r"^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")


class MarkdownLoader:
    name = "markdown"
    splittable = False

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None,
             limits: IngestSettings | None = None) -> list[Document]:
        front, body = split_front_matter(read_text(path))
        body = body.strip("\n")
        require_text(path, body, "no text besides front matter")
        sections, tables = structure(body)
        h1 = next((s.title for s in sections if s.level == 1), "")
        title = str(front.get("title") or "").strip() or h1 or path.stem
        meta = {"front_matter": front} if front else {}
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=body, title=title, mime="text/markdown", metadata=meta,
                         sections=sections, tables=tables)]


def split_front_matter(text: str) -> tuple[dict[str, str], str]:
    """({key: value}, body) for a document that starts with a ``---`` YAML block; ({}, text) otherwise."""
    m = _FRONT.match(text)
    if not m:
        return {}, text
    front: dict[str, str] = {}
    key = ""
    for line in m.group(1).splitlines():
        km = _KEY.match(line)
        if km:
            key = km.group(1)
            front[key] = _unquote(km.group(2).strip())
        elif key and line.strip():
            # A continuation (list item, nested mapping, folded text): keep it raw under its key.
            front[key] = (front[key] + "\n" + line.rstrip()).strip("\n")
    return front, text[m.end():]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def first_h1(body: str) -> str:
    """The first level-1 heading outside code fences, ATX (``# T``) or setext (``T`` over ``===``)."""
    return next((s.title for s in structure(body)[0] if s.level == 1), "")


def structure(body: str) -> tuple[tuple[Section, ...], tuple[Table, ...]]:
    """The headings and pipe tables of a Markdown text, with their character offsets in it."""
    sections: list[Section] = []
    tables: list[Table] = []
    lines = _lines(body)
    fence = ""
    para = -1  # index of the current paragraph's first line, -1 outside a paragraph
    i = 0
    while i < len(lines):
        start, line = lines[i]
        if fence or _FENCE.match(line):
            fence = _fence_after(fence, line)
            para = -1
        elif m := _ATX.match(line):
            sections.append(Section(start, len(m.group(1)), (m.group(2) or "").strip()))
            para = -1
        elif para >= 0 and (m := _SETEXT.match(line)) and not _is_table_row(lines[para][1]):
            title = " ".join(text.strip() for _, text in lines[para:i])
            sections.append(Section(lines[para][0], 1 if m.group(1)[0] == "=" else 2, title))
            para = -1
        elif i + 1 < len(lines) and "|" in line and _DELIMITER_ROW.match(lines[i + 1][1]) \
                and "|" in lines[i + 1][1]:
            end_row = _table_end(lines, i + 2)
            last_start, last = lines[end_row - 1]
            tables.append(Table(start, last_start + len(last.rstrip()), line.strip()))
            i, para = end_row, -1
            continue
        else:
            para = -1 if not line.strip() else (i if para < 0 else para)
        i += 1
    return tuple(sections), tuple(tables)


def _lines(text: str) -> list[tuple[int, str]]:
    """(offset, line) for every line of ``text``, without its newline."""
    out = []
    pos = 0
    for line in text.split("\n"):
        out.append((pos, line))
        pos += len(line) + 1
    return out


def _fence_after(fence: str, line: str) -> str:
    """The open fence after ``line``: a fence closes only on the same character, at least as long."""
    m = _FENCE.match(line)
    if not fence:
        return m.group(1) if m else ""
    if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip().strip(fence[0]):
        return ""
    return fence


def _is_table_row(line: str) -> bool:
    return "|" in line


def _table_end(lines: list[tuple[int, str]], i: int) -> int:
    """Index of the first line after the table rows starting at ``i`` (rows run until a blank line or a
    line without a pipe)."""
    while i < len(lines) and lines[i][1].strip() and "|" in lines[i][1]:
        i += 1
    return i
