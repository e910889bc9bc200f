"""Loaders: one source file -> Documents. ``load`` sniffs the format (content first, extension second)
and dispatches; ``units`` and ``Part`` let large PDFs and JSONL collections fan out across workers.

Every failure is a LoadError subclass whose ``source`` is the path and whose ``reason`` is one line.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import LoadError
from ...ids import source_uri
from ...types import Document
from .base import Documents, Loader, Part
from .docx import DocxLoader
from .html import HtmlLoader
from .jsonl import JsonlLoader
from .markdown import MarkdownLoader
from .pdf import PdfLoader
from .sniff import SUPPORTED_EXTENSIONS, sniff
from .text import TextLoader

_LOADERS: dict[str, Loader] = {ld.name: ld for ld in (PdfLoader(), DocxLoader(), HtmlLoader(),
                                                       MarkdownLoader(), JsonlLoader(), TextLoader())}
FORMATS = tuple(_LOADERS)

__all__ = ["FORMATS", "SUPPORTED_EXTENSIONS", "Documents", "Loader", "Part", "get_loader", "load",
           "sniff", "units"]


def get_loader(name: str) -> Loader:
    """The loader of a format name (as ``sniff`` returns it)."""
    try:
        return _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(FORMATS)}") from None


def units(path: str | Path, *, password: str | None = None) -> int:
    """Pages of a PDF, lines of a JSONL collection, 1 for anything else."""
    path = Path(path)
    return get_loader(sniff(path)).units(path, password=password)


def load(path: str | Path, *, uri: str | None = None, part: Part | None = None,
         password: str | None = None) -> list[Document]:
    """Load a source (or units [part.start, part.stop) of it). Returns a ``Documents`` list."""
    path = Path(path)
    loader = get_loader(sniff(path))
    if part is not None and not loader.splittable:
        if (part.start, part.stop) != (0, 1):
            raise LoadError(str(path), f"{loader.name} files do not split; got part [{part.start}, {part.stop})")
        part = None
    docs = loader.load(path, uri=uri or source_uri(path), part=part, password=password)
    return docs if isinstance(docs, Documents) else Documents(docs)

