"""Document jobs on a message broker: what a job is, what a transport and its job stream do.

A job names a file (never its bytes): workers read it from a filesystem they share with the producer.
Transports come from their URL through ``fanrag.jobs.factory.open_transport``:

    transport = open_transport("redis://127.0.0.1:6379/0?stream=ingest-jobs")
    await transport.submit(["docs/a.pdf", "docs/b.md"])          # producer
    source = transport.source(concurrency=4, idle_exit=30)        # consumer: an AsyncJobSource
    await engine.aingest(source); await source.aclose()

A job is acknowledged only from the pipeline's ``committed()``/``failed()`` callbacks, i.e. after every
store has committed the document: a worker that dies before that leaves the job to be reclaimed.
Every broker's stream is a ``fanrag.jobs.stream.BrokerJobStream``: the logic once, the broker's I/O apart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import JobError
from ..ingest.sources import SKIP_DIRS, AsyncJobSource, SourceFile
from ..limits.backoff import RetryPolicy

QUEUE_FIELD = "jobs.queue"
log = logging.getLogger(__name__)
T = TypeVar("T")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueConfig:
    """What every queue's URL sets alike: the tries a job gets, and the full-jitter backoff between them."""

    max_attempts: int = 5
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base_s=1.0, cap_s=60.0))
    # Broker connection errors: retried with full jitter for about a minute in all, then a JobError.
    reconnect: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_retries=12, base_s=0.2, cap_s=10.0))

    @staticmethod
    def retry_fields(params: Mapping[str, Any]) -> dict[str, Any]:
        """``max_attempts``, ``retry_base`` and ``retry_cap`` of a URL's parameters, as this class's fields."""
        return {"max_attempts": int(params.get("max_attempts", 5)),
                "retry": RetryPolicy(base_s=float(params.get("retry_base", 1.0)),
                                     cap_s=float(params.get("retry_cap", 60.0)))}


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """How a worker consumes: jobs in flight at once, the idle time it exits after, its consumer name."""

    concurrency: int = 4
    idle_exit: float | None = None
    consumer: str | None = None


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


@runtime_checkable
class JobStream(AsyncJobSource, Protocol):
    """The consumer side: an async job source the ingestion pipeline consumes, that a signal can stop."""

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


@runtime_checkable
class PartitionedTransport(JobTransport, Protocol):
    """A transport whose queue is split into partitions (Kafka): it can tell the lag of each."""

    async def lag(self) -> dict[int, int]: ...


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


# ---------------------------------------------------------------------- plumbing the transports share


def split_url(url: str, own: Iterable[str], scheme: str | None = None) -> tuple[str, dict[str, str]]:
    """``url`` without the query parameters named in ``own`` (fanrag's), and those apart; ``scheme``
    replaces the URL's (``bullmq://`` is a Redis connection)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    mine = {k: query.pop(k) for k in list(query) if k in set(own)}
    return urlunsplit(parts._replace(scheme=scheme or parts.scheme, query=urlencode(query))), mine


Errors = tuple[type[BaseException], ...]
NO_RETRY = RetryPolicy(max_retries=0)


async def retrying(what: str, call: Callable[[], Awaitable[T]], policy: RetryPolicy, transient: Errors) -> T:
    """``await call()``, again after a full-jitter pause on each ``transient`` error, ``policy.max_retries``
    times at most; the last such error, and any other, propagates."""
    for attempt in range(policy.max_retries):
        try:
            return await call()
        except transient as exc:  # a server restarting, a network blip: back off and try again
            pause = policy.delay(attempt)
            log.warning("%s failed (%s); retrying in %.1f s", what, exc, pause)
            await asyncio.sleep(pause)
    return await call()


async def broker_call(what: str, call: Callable[[], Awaitable[T]], *, where: str, errors: Errors,
                      transient: Errors = (), policy: RetryPolicy = NO_RETRY) -> T:
    """One broker operation, ``retrying`` over ``transient`` errors; then any of ``errors`` becomes a
    JobError naming the operation and ``where`` it ran (``redis XACK on stream 'ingest-jobs': ...``)."""
    try:
        return await retrying(what, call, policy, transient)
    except errors as exc:
        raise JobError(f"{what} on {where}: {exc}") from exc
