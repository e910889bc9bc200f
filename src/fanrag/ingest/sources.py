"""Where ingestion work comes from. A job source yields source files; the pipeline tells it when each
one is committed or failed, which is where a queue transport acknowledges (Kafka commits the offset,
Redis XACKs) only after every store has the document. The default source walks paths on disk.

Two honest protocols, told apart by ``isinstance`` (both are runtime-checkable):

    SyncJobSource     ``for src in source``        paths on disk, a list: nothing to wait for
    AsyncJobSource    ``async for src in source``  a queue consumer that waits on the network

``JobSource`` is their union (``isinstance(x, JobSource)`` works too), and ``iterate_source`` walks
either from async code, so the pipeline never asks which kind it was given.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeAlias, runtime_checkable

from ..ids import source_uri
from .loaders.base import Part


@dataclass(frozen=True, slots=True)
class SourceFile:
    """One file to ingest. ``token`` is the transport's handle for acknowledging it (None for paths)."""

    path: str
    uri: str
    size: int = 0
    mtime: float = 0.0
    password: str | None = None
    token: Any = None


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """What the planner found out about a source, in a worker process: format, size in units, hash."""

    source: SourceFile
    format: str
    content_hash: str
    units: int
    parts: tuple[Part | None, ...]


@dataclass(frozen=True, slots=True)
class PartJob:
    """One unit of CPU work: load + validate + chunk one part of a source (or the whole of it)."""

    plan: SourcePlan
    index: int
    part: Part | None
    known: dict[str, str] = field(default_factory=dict)  # doc_id -> committed content hash (skip unchanged)


@runtime_checkable
class SourceOutcomes(Protocol):
    """What the pipeline tells a source about each file it was handed, exactly once per file."""

    def committed(self, source: SourceFile) -> None:
        """Every document of ``source`` is committed in every store (safe to acknowledge)."""

    def failed(self, source: SourceFile, reason: str) -> None:
        """``source`` could not be ingested; ``reason`` names the file and what went wrong."""


@runtime_checkable
class SyncJobSource(SourceOutcomes, Protocol):
    """Source files from a plain iterable: nothing to wait for (``PathSource``)."""

    def __iter__(self) -> Iterator[SourceFile]: ...


@runtime_checkable
class AsyncJobSource(SourceOutcomes, Protocol):
    """Source files from an async iterable: a queue consumer that waits on the network (``fanrag.jobs``)."""

    def __aiter__(self) -> AsyncIterator[SourceFile]: ...


# A union of runtime-checkable protocols: ``isinstance(x, JobSource)`` holds for either kind.
JobSource: TypeAlias = SyncJobSource | AsyncJobSource


async def iterate_source(source: JobSource) -> AsyncIterator[SourceFile]:
    """Every file of either kind of source, from async code (a sync source is not waited on)."""
    if isinstance(source, AsyncJobSource):
        async for src in source:
            yield src
    else:
        for src in source:
            yield src


SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__", "node_modules", ".fanrag"}


class PathSource:
    """Files and directories on disk, walked recursively in a stable (sorted) order."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]], *, extensions: Iterable[str] | None = None,
                 password: str | None = None, exclude: Iterable[str | os.PathLike[str]] = ()) -> None:
        self._paths = [Path(p) for p in paths]
        self._ext = {e.lower() for e in extensions} if extensions is not None else None
        self._password = password
        self._exclude = {Path(p).resolve() for p in exclude}
        self.missing: list[str] = []  # paths given that do not exist

    def __iter__(self) -> Iterator[SourceFile]:
        for root in self._paths:
            if not root.exists():
                self.missing.append(str(root))
                continue
            files = [root] if root.is_file() else self._walk(root)
            for f in files:
                yield self._source(f)

    def _walk(self, root: Path) -> Iterator[Path]:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            if here.resolve() in self._exclude:
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                if self._ext is None or Path(name).suffix.lower() in self._ext:
                    yield here / name

    def _source(self, path: Path) -> SourceFile:
        try:
            st = path.stat()
            size, mtime = st.st_size, st.st_mtime
        except OSError:  # vanished: the worker reports it with the file's name
            size, mtime = 0, 0.0
        return SourceFile(path=str(path), uri=source_uri(path), size=size, mtime=mtime, password=self._password)

    def committed(self, source: SourceFile) -> None:
        return None

    def failed(self, source: SourceFile, reason: str) -> None:
        return None
