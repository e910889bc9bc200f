"""Stable identifiers: the same input always gets the same id, on any machine and executor."""

from __future__ import annotations

import hashlib
from pathlib import Path


def _h(data: str | bytes, n: int = 16) -> str:
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=n).hexdigest()


def source_uri(path: str | Path) -> str:
    """The canonical URI of a file: absolute, symlinks resolved."""
    return Path(path).resolve().as_uri()


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
