"""Plain UTF-8 text, kept as is (newlines normalised)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...ids import document_id
from ...types import Document
from ._common import hash_file, read_text


class TextLoader:
    name = "text"
    splittable = False

    def units(self, path: Path, *, password: str | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None) -> list[Document]:
        text = read_text(path)
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=text, title=path.stem, mime="text/plain")]
