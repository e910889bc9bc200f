"""Document jobs on a message broker: what a job is, what a transport does, and the URL factory.

A job names a file (never its bytes): workers read it from a filesystem they share with the producer.
Transports come from their URL through ``fanrag.jobs.factory.open_transport``:

    transport = open_transport("redis://127.0.0.1:6379/0?stream=ingest-jobs")
    await transport.submit(["docs/a.pdf", "docs/b.md"])          # producer
    source = transport.source(concurrency=4, idle_exit=30)        # consumer: a JobSource for the pipeline
    await engine.aingest(source); await source.aclose()

A job is acknowledged only from the pipeline's ``committed()``/``failed()`` callbacks, i.e. after every
store has committed the document: a worker that dies before that leaves the job to be reclaimed.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import JobError
from ..ingest.sources import SKIP_DIRS, SourceFile

QUEUE_FIELD = "jobs.queue"



@dataclass(frozen=True, slots=True)
class Job:
    """One file to ingest. ``attempts`` counts the failed tries so far; ``not_before`` is a Unix time."""

    uri: str
    path: str
    content_hash: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0
    not_before: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Job:
        try:
            data = json.loads(text)
            return cls(uri=str(data["uri"]), path=str(data["path"]), content_hash=str(data.get("content_hash", "")),
                       options=dict(data.get("options") or {}), attempts=int(data.get("attempts", 0)),
                       not_before=float(data.get("not_before", 0.0)))
        except (ValueError, KeyError, TypeError) as exc:
            raise JobError(f"malformed job payload: {exc}") from exc

    def retry(self, not_before: float) -> Job:
        return Job(self.uri, self.path, self.content_hash, self.options, self.attempts + 1, not_before)

    def source_file(self, token: Any) -> SourceFile:
        """The pipeline's view of the job, stat'ed now (size and mtime let it skip unchanged files)."""
        try:
            st = os.stat(self.path)
            size, mtime = st.st_size, st.st_mtime
        except OSError:  # vanished: the pipeline reports it with the file's name
            size, mtime = 0, 0.0
        return SourceFile(path=self.path, uri=self.uri, size=size, mtime=mtime,
                          password=self.options.get("password"), token=token)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """``waiting``: never delivered (the group's lag); ``in_flight``: delivered, not yet acknowledged."""

    queue: str
    submitted: int
    waiting: int
    in_flight: int
    done: int
    retried: int
    dead: int
    consumers: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobStream(Protocol):
    """The consumer side: a JobSource (async iteration) the ingestion pipeline consumes."""

    def __aiter__(self) -> AsyncIterator[SourceFile]: ...

    def committed(self, source: SourceFile) -> None: ...

    def failed(self, source: SourceFile, reason: str) -> None: ...

    def stop(self) -> None:
        """Stop reading; jobs already handed out finish (and are acknowledged) or stay to be reclaimed."""

    async def aclose(self) -> None:
        """Wait for outstanding acknowledgements."""


class JobTransport(Protocol):
    async def submit(self, jobs: Iterable[Job]) -> list[str]:
        """Enqueue jobs; returns the broker's ids."""

    def source(self, *, concurrency: int = 4, idle_exit: float | None = None, consumer: str | None = None) -> JobStream:
        """A consumer of the queue; with ``idle_exit`` it ends once the queue has been drained that long."""

    async def stats(self) -> QueueStats: ...

    async def dead_letters(self, count: int = 100) -> list[tuple[Job, str]]:
        """Jobs that ran out of attempts, with the last reason."""

    async def aclose(self) -> None: ...


def consumer_name() -> str:
    """A consumer (worker) name unique across hosts and processes: ``host-pid-random``."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def jobs_for(paths: Iterable[str | os.PathLike[str]], options: dict[str, Any] | None = None) -> list[Job]:
    """One job per file; directories are expanded recursively (sorted, hidden files skipped)."""
    from ..ids import source_uri

    out: list[Job] = []
    for root in map(Path, paths):
        if not root.exists():
            raise JobError(f"{root}: no such file or directory")
        files = [root] if root.is_file() else _walk(root)
        out.extend(Job(uri=source_uri(f), path=str(f.resolve()), options=dict(options or {})) for f in files)
    return out


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        found.extend(Path(dirpath) / n for n in sorted(filenames) if not n.startswith("."))
    return found
