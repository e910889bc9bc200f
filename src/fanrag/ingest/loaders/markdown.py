"""Markdown, kept mostly as is: the text is already readable and its headings are useful context.
YAML front matter moves into metadata (flat ``key: value`` pairs; nested YAML is kept as its raw text
so no YAML parser is needed); the title is front matter ``title``, else the first H1, else the name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ...ids import document_id
from ...types import Document
from ._common import hash_file, read_text, require_text

_FRONT = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_KEY = re.compile(r"^([A-Za-z_][\w\-]*)[ \t]*:[ \t]*(.*)$")
_ATX_H1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$")
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


class MarkdownLoader:
    name = "markdown"
    splittable = False

    def units(self, path: Path, *, password: str | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None) -> list[Document]:
        front, body = split_front_matter(read_text(path))
        body = body.strip("\n")
        require_text(path, body, "no text besides front matter")
        title = str(front.get("title") or "").strip() or first_h1(body) or path.stem
        meta = {"front_matter": front} if front else {}
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=body, title=title, mime="text/markdown", metadata=meta)]


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
    in_fence = False
    prev = ""
    for line in body.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        elif not in_fence:
            m = _ATX_H1.match(line)
            if m:
                return m.group(1).strip()
            if prev.strip() and re.fullmatch(r"=+[ \t]*", line):
                return prev.strip()
        prev = "" if in_fence else line
    return ""
