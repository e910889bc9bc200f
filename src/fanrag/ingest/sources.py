"""Where ingestion work comes from. A job source yields source files; the pipeline tells it when each
one is committed or failed, which is where a queue transport acknowledges (Kafka commits the offset,
Redis XACKs) only after every store has the document. The default source walks paths on disk.

Two honest protocols, told apart by ``isinstance`` (both are runtime-checkable):

    SyncJobSource     ``for src in source``        paths on disk, a list: nothing to wait for
    AsyncJobSource    ``async for src in source``  a queue consumer that waits on the network

``JobSource`` is their union (``isinstance(x, JobSource)`` works too), and ``iterate_source`` walks
either from async code, so the pipeline never asks which kind it was given.

``PathSource`` is the one place where paths on disk become sources, for the CLI, the HTTP server and
Celery alike. Its invariants: every file it yields resolves (symlinks followed, no loop); with a ``root``
(``fanrag ingest --root``, the server's ``server.ingest_root`` and its upload directory) every file it
yields resolves inside that root, whether it was named or reached by the walk; no directory is walked
twice. What it will not yield is recorded in ``refused`` (path, one-line reason), never read. A special
file (FIFO, device, socket) is yielded like any file so that the planner fails it by name: the planner
refuses whatever is not a regular file before it opens anything (``work.plan_source``).
"""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

from ..ids import source_uri
from .loaders.base import Part

if TYPE_CHECKING:
    from .summary import IngestSummary


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
    """Files and directories on disk, walked recursively in a stable (sorted) order.

    ``root`` confines the source: a path given or found whose real path lies outside it is refused, and
    so is one inside an ``exclude``d directory (the index home), named or not. Symlinked directories met
    in a walk are not followed (a symlinked file is, if it resolves inside the root). ``missing`` lists
    the paths given that do not exist; ``refused`` every other path not yielded.
    """

    def __init__(self, paths: Iterable[str | os.PathLike[str]], *, extensions: Iterable[str] | None = None,
                 password: str | None = None, exclude: Iterable[str | os.PathLike[str]] = (),
                 root: str | os.PathLike[str] | None = None) -> None:
        self._paths = [Path(p) for p in paths]
        self._ext = {e.lower() for e in extensions} if extensions is not None else None
        self._password = password
        self._exclude = {Path(p).resolve() for p in exclude}
        self.root = Path(os.path.realpath(root)) if root is not None else None
        self.missing: list[str] = []  # paths given that do not exist
        self.refused: list[tuple[str, str]] = []  # (path, reason): outside the root, a symlink loop, unreadable
        self._walked: set[Path] = set()  # real paths of the directories walked so far

    @property
    def paths(self) -> tuple[Path, ...]:
        """The paths given, in order."""
        return tuple(self._paths)

    def __iter__(self) -> Iterator[SourceFile]:
        for given in self._paths:
            real = self._confined(given)
            if real is None:
                continue
            if real.is_dir():
                yield from self._walk(given)
            else:
                yield self._source(given, real)

    def _confined(self, path: Path, real: Path | None = None, *, given: bool = True) -> Path | None:
        """The real path of ``path`` if it resolves inside the root; else None, with the reason recorded
        (``given``: named by the caller, so a path that does not exist is "missing")."""
        try:
            real = real or Path(os.path.realpath(path, strict=True))
        except FileNotFoundError:
            if given:
                self.missing.append(str(path))
            else:
                self.refused.append((str(path), "no such file: a dangling symlink, or removed during the walk"))
            return None
        except OSError as exc:  # ELOOP (a symlink loop), ENAMETOOLONG, EACCES: not a file we can name
            self.refused.append((str(path), _os_reason(exc)))
            return None
        except ValueError as exc:  # a NUL byte, or a str that no file name encodes to (a lone surrogate)
            self.refused.append((repr(str(path)), f"not a valid file name: {exc}"))
            return None
        if self.root is not None and not real.is_relative_to(self.root):
            self.refused.append((str(path), f"resolves to {real}, outside the ingest root {self.root}"))
            return None
        excluded = next((ex for ex in self._exclude if real.is_relative_to(ex)), None)
        if excluded is not None:  # the index home: its files (settings, uploads, stores) are never sources
            self.refused.append((str(path), f"resolves to {real}, inside the excluded directory {excluded}"))
            return None
        return real

    def _walk(self, top: Path) -> Iterator[SourceFile]:
        def unreadable(exc: OSError) -> None:  # a directory that cannot be listed is named, not skipped
            self.refused.append((str(exc.filename), f"cannot list directory: {exc.strerror or exc}"))

        for dirpath, dirnames, filenames in os.walk(top, onerror=unreadable):
            here = Path(dirpath)
            real_dir = Path(os.path.realpath(here))  # os.walk follows no symlinked directory below ``top``
            if real_dir in self._exclude or real_dir in self._walked:
                dirnames[:] = []
                continue
            self._walked.add(real_dir)
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or not self._wanted(name):
                    continue
                path = here / name
                # Only a symlink needs resolving: ``real_dir / name`` is already real otherwise.
                real = None if os.path.islink(path) else real_dir / name
                real = self._confined(path, real, given=False)
                if real is not None:
                    yield self._source(path, real)

    def _wanted(self, name: str) -> bool:
        return self._ext is None or Path(name).suffix.lower() in self._ext

    def _source(self, path: Path, real: Path) -> SourceFile:
        try:
            st = real.stat()
            size, mtime = st.st_size, st.st_mtime
        except OSError:  # vanished: the worker reports it with the file's name
            size, mtime = 0, 0.0
        return SourceFile(path=str(path), uri=source_uri(real), size=size, mtime=mtime, password=self._password)

    def report(self, summary: IngestSummary) -> IngestSummary:
        """Add the refused paths to ``summary.failed`` (once: a pipeline that already reported them is not
        repeated); returns the summary."""
        summary.failed.extend(r for r in self.refused if r not in summary.failed)
        return summary

    def committed(self, source: SourceFile) -> None:
        return None

    def failed(self, source: SourceFile, reason: str) -> None:
        return None


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links)"
    return f"cannot resolve: {exc.strerror or exc}"
