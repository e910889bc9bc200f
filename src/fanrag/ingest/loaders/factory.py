"""Which loader reads a file: ``sniff`` names its format from the content (the extension second), and
``LOADERS`` maps each format to its loader class, imported on first use.

``load`` and ``units`` are the two calls the pipeline makes; they sniff, then dispatch. A new format is
one entry here plus the bytes that tell it apart in ``sniff.py``. Both take ``limits`` (the ``ingest``
settings; None = their defaults) and pass them to the loader, which checks them before its expensive step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import LoadError
from ...ids import source_uri
from ...registry import Registry
from ...types import Document
from .base import Documents, Loader, Part
from .sniff import sniff

if TYPE_CHECKING:
    from ...settings import IngestSettings

# Format (as ``sniff`` returns it) -> loader class, built without arguments. Every loader's packages are
# core dependencies, imported inside the loader only when it runs.
LOADERS: Registry[type[Loader]] = Registry("format", "loader")
LOADERS.add("pdf", "fanrag.ingest.loaders.pdf:PdfLoader")
LOADERS.add("docx", "fanrag.ingest.loaders.docx:DocxLoader")
LOADERS.add("html", "fanrag.ingest.loaders.html:HtmlLoader")
LOADERS.add("markdown", "fanrag.ingest.loaders.markdown:MarkdownLoader")
LOADERS.add("jsonl", "fanrag.ingest.loaders.jsonl:JsonlLoader")
LOADERS.add("text", "fanrag.ingest.loaders.text:TextLoader")


def get_loader(name: str) -> Loader:
    """The loader of a format name (as ``sniff`` returns it)."""
    if name not in LOADERS:
        raise ValueError(f"unknown format {name!r}; known: {', '.join(LOADERS)}")
    return LOADERS.create(name)  # loaders hold no state: building one is free


def units(path: str | Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
    """Pages of a PDF, lines of a JSONL collection, 1 for anything else."""
    path = Path(path)
    return get_loader(sniff(path, limits=limits)).units(path, password=password, limits=limits)


def load(path: str | Path, *, uri: str | None = None, part: Part | None = None,
         password: str | None = None, limits: IngestSettings | None = None) -> list[Document]:
    """Load a source (or units [part.start, part.stop) of it). Returns a ``Documents`` list."""
    path = Path(path)
    loader = get_loader(sniff(path, limits=limits))
    if part is not None and not loader.splittable:
        if (part.start, part.stop) != (0, 1):
            raise LoadError(str(path), f"{loader.name} files do not split; got part [{part.start}, {part.stop})")
        part = None
    docs = loader.load(path, uri=uri or source_uri(path), part=part, password=password, limits=limits)
    return docs if isinstance(docs, Documents) else Documents(docs)
