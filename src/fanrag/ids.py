"""Stable identifiers: the same input always gets the same id, on any machine and executor.

A source URI is the lossless form of a file's name (see ``fanrag.names``): the file system's bytes,
percent-encoded, so a name that is not UTF-8 or holds a newline is still exactly one URI, and
``path_of`` gives the very same path back.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit


def _h(data: str | bytes, n: int = 16) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=n).hexdigest()


def source_uri(path: str | os.PathLike[str]) -> str:
    """The canonical URI of a file: absolute, symlinks resolved as far as they go. Never raises for a
    name: a symlink loop or a dangling link keeps its own path (``realpath`` without ``strict``; the
    file's failure is reported when it is read), and undecodable bytes are percent-encoded."""
    return Path(os.path.realpath(path)).as_uri()


def path_of(uri: str) -> Path | None:
    """The path a ``file://`` URI names, byte for byte (None for any other URI). A fragment (a JSONL
    entry: ``file#entry``) is not part of the path."""
    if not uri.startswith("file://"):
        return None
    return Path(unquote(urlsplit(uri).path, errors="surrogateescape"))


def document_id(uri: str) -> str:
    """Document id from its source URI (a file URI, or ``file#entry`` for collection entries)."""
    return "d" + _h(uri, 10)


def content_hash(data: str | bytes) -> str:
    """Hash of a document's content, for change detection."""
    return _h(data, 16)


def chunk_id(doc_id: str, position: int, text: str) -> str:
    """Chunk id from document id + position + text hash."""
    return f"{doc_id}-{position:05d}-{_h(text, 4)}"


def vector_label(chunk_id_: str) -> int:
    """A 63-bit integer label for index backends that need ints (hnswlib); collisions ~ 2^-63."""
    return int.from_bytes(hashlib.blake2b(chunk_id_.encode(), digest_size=8).digest(), "big") >> 1
