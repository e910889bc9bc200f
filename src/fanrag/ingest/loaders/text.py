"""Plain UTF-8 text, kept as is (newlines normalised). No structure: the title is the file name.

No bound of its own beyond ``pipeline.max_file_mb``: the text is read once, and a run without whitespace
is cut by the chunker between tokens."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...ids import document_id
from ...types import Document
from ._common import hash_file, read_text

if TYPE_CHECKING:
    from ...settings import IngestSettings


class TextLoader:
    name = "text"
    splittable = False

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        return 1

    def load(self, path: Path, *, uri: str, part: Any = None, password: str | None = None,
             limits: IngestSettings | None = None) -> list[Document]:
        text = read_text(path)
        return [Document(doc_id=document_id(uri), uri=uri, source=uri, content_hash=hash_file(path),
                         text=text, title=path.stem, mime="text/plain")]
