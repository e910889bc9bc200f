"""Loader protocol. A loader turns one source file into Documents; the format is chosen by sniffing
the content first and the extension second (a .txt that is really a PDF loads as a PDF; binary junk
named .txt is refused). Loaders are pure functions of (path, options): they run in worker processes.

Large sources fan out: ``units(path)`` says how many pages (PDF) or entries (JSONL) a source has, and
``load(path, part=Part(start, stop))`` loads only units [start, stop). Merging parts in ``start`` order
gives the same documents as loading the whole source.

``limits`` (the ``ingest`` settings, None = their defaults) bounds what one source may cost; a loader
checks them before its expensive step and raises LimitExceeded naming the setting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ...settings import IngestSettings


@dataclass(frozen=True, slots=True)
class Part:
    """Units [start, stop) of a source: 0-based pages of a PDF, or 0-based lines of a JSONL file."""

    start: int
    stop: int


class Loader(Protocol):
    name: str  # "pdf", "html", "markdown", "text", "docx", "jsonl"
    splittable: bool  # whether ``units``/``part`` fan-out applies

    def units(self, path: Path, *, password: str | None = None, limits: IngestSettings | None = None) -> int:
        """Pages (PDF) or entries (JSONL); 1 for formats that do not split."""

    def load(self, path: Path, *, uri: str, part: Part | None = None, password: str | None = None,
             limits: IngestSettings | None = None) -> list:  # list[Document]
        """Load the source (or one part of it). Raises a LoadError subclass naming the file."""


class Documents(list):
    """A loader's result: the documents, plus ``errors`` for entries that were skipped.

    Only collections (JSONL) fill ``errors``: one bad line must not cost the other 5,000 documents, so
    the loader returns the good ones and lists each bad one as ``(entry uri, one-line reason naming the
    file and line)``. A list subclass, so callers that only want documents need not know; it pickles
    with its ``errors``.
    """

    def __init__(self, docs: Iterable[Any] = (), errors: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(docs)
        self.errors: list[tuple[str, str]] = list(errors)
