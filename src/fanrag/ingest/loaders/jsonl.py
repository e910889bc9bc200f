"""JSONL collections, BEIR style: one document per line, ``{"_id", "title", "text", "metadata"}``.

Each line is its own Document (uri ``file#<_id>``). ``units`` counts lines and ``Part(start, stop)``
loads lines [start, stop) after counting newlines up to ``start``: no index, and for an 8 MB file the
scan costs milliseconds. Blank lines count as units but yield nothing. A bad line (invalid JSON or
UTF-8, not an object, no text, a repeated id) is skipped and reported in ``Documents.errors``; only a
whole file with no good line at all raises (a part returns its errors instead).

Bounds: a line longer than ``ingest.max_line_mb`` is a bad line, skipped in blocks without being held
in memory; JSON nested too deep for the parser is a bad line too (not a RecursionError for the run).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

import numpy as np

from ...errors import CorruptDocument, EmptyDocument, LoadError
from ...ids import content_hash, document_id
from ...names import has_surrogate, shown
from ...types import Document
from ._common import os_errors
from .base import Documents, Part
from .limits import MIB, resolve

if TYPE_CHECKING:
    from ...settings import IngestSettings

_BLOCK = 1 << 20
MIME = "application/jsonl"


class BadLine(ValueError):
    """One line that is not a usable entry; the message is the reason."""


class JsonlLoader:
    name = "jsonl"
    splittable = True

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        with os_errors(path), open(path, "rb") as f:
            return _count_lines(f)

    def load(self, path: Path, *, uri: str, part: Part | None = None,
             password: str | None = None, limits: IngestSettings | None = None) -> Documents:
        max_line = resolve(limits).max_line_mb
        start = 0 if part is None else part.start
        stop = None if part is None else part.stop
        if part is not None and not 0 <= part.start < part.stop:
            raise LoadError(str(path), f"bad line range [{part.start}, {part.stop})")
        docs = Documents()
        seen: set[str] = set()
        blank = True
        with os_errors(path), open(path, "rb") as f:
            _skip_lines(f, start)
            for number, raw in _lines(f, start, stop, max_line * MIB):
                if raw is not None and not raw.strip():
                    continue
                blank = False
                try:
                    if raw is None:
                        raise BadLine(f"longer than {max_line:,} MiB (ingest.max_line_mb = {max_line:,})")
                    doc = entry_document(raw, uri, number)
                    if doc.doc_id in seen:
                        raise BadLine(f"repeats id {doc.metadata['external_id']!r} of an earlier line")
                except BadLine as exc:
                    docs.errors.append((f"{uri}#line{number}", f"{path}: line {number}: {exc}"))
                    continue
                seen.add(doc.doc_id)
                docs.append(doc)
        return _checked(path, docs, blank, part)


def entry_document(raw: bytes, file_uri: str, number: int) -> Document:
    """The Document of one JSONL line (``number`` is 1-based, used when the entry has no ``_id``)."""
    obj = _parse(raw)
    text, title = obj.get("text"), obj.get("title") or ""
    if not isinstance(text, str):
        raise BadLine("no 'text' string" if text is None else f"'text' is a {type(text).__name__}, not a string")
    if not isinstance(title, str):
        title = str(title)
    body = f"{title}\n\n{text}" if title.strip() and text.strip() else (text if text.strip() else title)
    if not body.strip():
        raise BadLine("empty text and title")
    ext_id = obj.get("_id", obj.get("id"))
    ext_id = f"line{number}" if ext_id is None or ext_id == "" else str(ext_id)
    if has_surrogate(ext_id):  # the id becomes a URI, which only valid Unicode can spell: this line alone fails
        raise BadLine(f"'_id' {shown(ext_id)!r} holds a lone surrogate (not valid Unicode)")
    uri = f"{file_uri}#{quote(ext_id, safe='')}"
    extra = obj.get("metadata")
    metadata: dict[str, Any] = {"external_id": ext_id, **(extra if isinstance(extra, dict) else {})}
    return Document(doc_id=document_id(uri), uri=uri, source=file_uri,
                    content_hash=content_hash(f"{title}\x1f{text}"), text=body, title=title,
                    mime=MIME, metadata=metadata)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        line = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadLine(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start} of the line)") from exc
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadLine(f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    except RecursionError as exc:
        raise BadLine("JSON nested too deeply to parse") from exc
    if not isinstance(obj, dict):
        raise BadLine(f"a JSON {type(obj).__name__}, not an object")
    return obj


def _checked(path: Path, docs: Documents, blank: bool, part: Part | None) -> Documents:
    if docs or part is not None:
        # A part reports its bad lines rather than failing: its neighbours' documents still count.
        return docs
    if blank:
        raise EmptyDocument(str(path), "no entries (empty or blank lines only)")
    first = docs.errors[0][1].split(": ", 1)[1]
    more = f" (and {len(docs.errors) - 1} more bad lines)" if len(docs.errors) > 1 else ""
    raise CorruptDocument(str(path), f"no valid entry; {first}{more}")


_NEWLINE = ord("\n")


def _count_lines(f: BinaryIO) -> int:
    n, last = 0, b"\n"
    while block := f.read(_BLOCK):
        n += block.count(b"\n")
        last = block[-1:]
    return n + (last != b"\n")  # a last line without a trailing newline is still a line


def _skip_lines(f: BinaryIO, n: int) -> None:
    """Position ``f`` at the start of line ``n`` (0-based), reading blocks rather than lines."""
    pos = 0
    while n > 0:
        block = f.read(_BLOCK)
        if not block:
            return
        count = block.count(b"\n")
        if count < n:
            n -= count
            pos += len(block)
            continue
        # the n-th newline of the block, found in C: a Python loop over a block of blank lines (a million
        # newlines per MiB) made each part of a 2M-line collection cost seconds
        cut = int(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == _NEWLINE)[n - 1])
        f.seek(pos + cut + 1)
        return


def _lines(f: BinaryIO, start: int, stop: int | None, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(1-based line number, raw line) for lines [start, stop) of ``f``, already positioned at ``start``;
    the line is None when it is longer than ``max_bytes`` (its rest is skipped, never held)."""
    number = start
    while stop is None or number < stop:
        raw = f.readline(max_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            _skip_line(f)
            yield number, None
            continue
        yield number, raw


def _skip_line(f: BinaryIO) -> None:
    """Move ``f`` past the next newline (or to the end), a block at a time."""
    while block := f.read(_BLOCK):
        cut = block.find(b"\n")
        if cut >= 0:
            f.seek(cut + 1 - len(block), 1)
            return
