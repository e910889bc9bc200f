"""Document jobs on a Redis stream with a consumer group (redis-py asyncio).

    XADD <stream> {job}                  submit: one entry per file
    XREADGROUP <group> <consumer> >      a worker takes up to ``concurrency`` new jobs
    MULTI XACK; HINCRBY done             only from the pipeline's committed() callback
    MULTI XADD retry; XACK; HINCRBY      failed(): the job again with attempts+1 and a not-before time
                                         (exponential backoff, full jitter); after ``max_attempts``
                                         XADD <stream>.dlq with the reason instead
    XAUTOCLAIM min-idle                  a dead worker's jobs move to a live one after ``reclaim_idle`` s;
                                         one handed out more than ``max_attempts`` times goes to the DLQ
    XCLAIM JUSTID (heartbeat)            a live worker keeps its own long jobs from looking idle

Keys: ``<stream>``, ``<stream>.dlq`` and the hash ``<stream>.counters`` (done, retried, dead). A retry is
a new entry, so a duplicate delivery (at-least-once) is possible: ingestion is idempotent, and a file
already committed unchanged is acknowledged without work. Run Redis with AOF to survive its restarts.

URL: ``redis://host:port/db?stream=ingest-jobs&group=fanrag&max_attempts=5&retry_base=1&retry_cap=60
&reclaim_idle=60&block=1``; other query parameters go to redis-py.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigError, JobError, require
from ..ingest.sources import SourceFile
from ..limits.backoff import RetryPolicy
from .base import QUEUE_FIELD, Job, QueueStats, consumer_name

log = logging.getLogger(__name__)
T = TypeVar("T")
PAYLOAD = "job"


@dataclass(frozen=True, slots=True)
class RedisQueueConfig:
    url: str  # the connection URL, without fanrag's own query parameters
    stream: str = "ingest-jobs"
    group: str = "fanrag"
    max_attempts: int = 5
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base_s=1.0, cap_s=60.0))
    reclaim_idle_s: float = 60.0
    block_s: float = 1.0
    # Connection errors: retried with full jitter for about a minute in all, then a JobError.
    reconnect: RetryPolicy = field(default_factory=lambda: RetryPolicy(max_retries=12, base_s=0.2, cap_s=10.0))

    @property
    def dlq(self) -> str:
        return f"{self.stream}.dlq"

    @property
    def counters(self) -> str:
        return f"{self.stream}.counters"


_OWN = {"stream", "group", "max_attempts", "retry_base", "retry_cap", "reclaim_idle", "block"}


def parse_url(url: str) -> RedisQueueConfig:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    own = {k: query.pop(k) for k in list(query) if k in _OWN}
    conn = urlunsplit(parts._replace(query=urlencode(query)))
    try:
        cfg = RedisQueueConfig(
            url=conn, stream=own.get("stream", "ingest-jobs"), group=own.get("group", "fanrag"),
            max_attempts=int(own.get("max_attempts", 5)),
            retry=RetryPolicy(base_s=float(own.get("retry_base", 1.0)), cap_s=float(own.get("retry_cap", 60.0))),
            reclaim_idle_s=float(own.get("reclaim_idle", 60.0)), block_s=float(own.get("block", 1.0)))
    except ValueError as exc:
        raise ConfigError(QUEUE_FIELD, f"{url!r}: {exc}") from exc
    if cfg.max_attempts < 1 or cfg.reclaim_idle_s <= 0 or cfg.block_s <= 0 or not cfg.stream:
        raise ConfigError(QUEUE_FIELD, f"{url!r}: need max_attempts >= 1, reclaim_idle > 0, block > 0, a stream")
    return cfg


class RedisStreamsTransport:
    def __init__(self, config: RedisQueueConfig) -> None:
        self.config = config
        self._redis: Any = None
        self._errors: tuple[type[BaseException], ...] = ()
        self._transient: tuple[type[BaseException], ...] = ()
        self._group_ready = False

    @classmethod
    def from_url(cls, url: str) -> RedisStreamsTransport:
        return cls(parse_url(url))

    # ------------------------------------------------------------------ connection

    @property
    def redis(self) -> Any:
        return self._connect()

    def _connect(self) -> Any:
        if self._redis is None:
            aioredis = require("redis.asyncio", feature="Redis job queue", extra="redis")
            exceptions = require("redis.exceptions", feature="Redis job queue", extra="redis")
            self._errors = (exceptions.RedisError,)
            self._transient = (exceptions.ConnectionError, exceptions.TimeoutError)
            self._redis = aioredis.from_url(self.config.url, decode_responses=True)
        return self._redis

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis operation; its errors become JobError naming the operation and the stream."""
        self._connect()  # also sets the exception classes
        policy = self.config.reconnect
        for attempt in range(policy.max_retries + 1):
            try:
                return await fn()
            except self._transient as exc:  # server restarting, network blip: back off and try again
                if attempt == policy.max_retries:
                    raise JobError(f"redis {what} on stream {self.config.stream!r}: {exc}") from exc
                pause = policy.delay(attempt)
                log.warning("redis %s failed (%s); retrying in %.1f s", what, exc, pause)
                await asyncio.sleep(pause)
            except self._errors as exc:
                raise JobError(f"redis {what} on stream {self.config.stream!r}: {exc}") from exc
        raise AssertionError("unreachable: the loop returns or raises")

    async def ensure_group(self) -> None:
        if self._group_ready:
            return
        c = self.config

        async def create() -> None:
            try:
                await self.redis.xgroup_create(c.stream, c.group, id="0", mkstream=True)
            except self._errors as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        await self._call("XGROUP CREATE", create)
        self._group_ready = True

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # ------------------------------------------------------------------ producer

    async def submit(self, jobs: Iterable[Job]) -> list[str]:
        await self.ensure_group()
        batch = list(jobs)

        async def add() -> list[str]:
            pipe = self.redis.pipeline(transaction=False)
            for job in batch:
                pipe.xadd(self.config.stream, {PAYLOAD: job.to_json()})
            return [str(i) for i in await pipe.execute()]
        return await self._call("XADD", add) if batch else []

    # ------------------------------------------------------------------ consumer primitives

    async def read(self, consumer: str, count: int, block_s: float | None) -> list[tuple[str, Job | str]]:
        """New entries for this consumer; a malformed payload comes back as its error text."""
        c = self.config
        block = max(1, int(block_s * 1000)) if block_s else None
        reply = await self._call("XREADGROUP", lambda: self.redis.xreadgroup(
            c.group, consumer, {c.stream: ">"}, count=count, block=block))
        return [_entry(eid, fields) for _, entries in (reply or []) for eid, fields in entries]

    async def reclaim(self, consumer: str, count: int, start: str) -> tuple[str, list[tuple[str, Job | str]]]:
        """Entries idle longer than ``reclaim_idle`` (a dead worker's), now owned by ``consumer``."""
        c = self.config
        reply = await self._call("XAUTOCLAIM", lambda: self.redis.xautoclaim(
            c.stream, c.group, consumer, int(c.reclaim_idle_s * 1000), start_id=start, count=count))
        cursor, entries = str(reply[0]), reply[1]
        return cursor, [_entry(eid, fields) for eid, fields in entries if fields]

    async def touch(self, consumer: str, ids: list[str]) -> None:
        """Reset the idle time of entries this consumer still works on (so nobody reclaims them)."""
        c = self.config
        if ids:
            await self._call("XCLAIM", lambda: self.redis.xclaim(
                c.stream, c.group, consumer, 0, ids, justid=True))

    async def deliveries(self, ids: list[str]) -> dict[str, int]:
        """How many times each pending entry was handed out (XREADGROUP and XAUTOCLAIM both count)."""
        c = self.config

        async def run() -> list[Any]:
            pipe = self.redis.pipeline(transaction=False)
            for eid in ids:
                pipe.xpending_range(c.stream, c.group, min=eid, max=eid, count=1)
            return list(await pipe.execute())
        replies = await self._call("XPENDING", run)
        return {str(r[0]["message_id"]): int(r[0]["times_delivered"]) for r in replies if r}

    async def ack(self, ids: list[str]) -> None:
        await self._transaction("XACK", ids, "done")

    async def requeue(self, ids: list[str], job: Job) -> None:
        await self._transaction("retry", ids, "retried", (self.config.stream, {PAYLOAD: job.to_json()}))

    async def dead_letter(self, ids: list[str], job: Job, reason: str) -> None:
        fields = {PAYLOAD: job.to_json(), "reason": reason, "entry": ids[0] if ids else ""}
        await self._transaction("dead-letter", ids, "dead", (self.config.dlq, fields))

    async def _transaction(self, what: str, ids: list[str], counter: str,
                           add: tuple[str, dict[str, str]] | None = None) -> None:
        """XADD (optional) + XACK + counter, atomically: a job is never both lost and acknowledged."""
        c = self.config

        async def run() -> None:
            pipe = self.redis.pipeline(transaction=True)
            if add is not None:
                pipe.xadd(*add)
            pipe.xack(c.stream, c.group, *ids)
            pipe.hincrby(c.counters, counter, len(ids))
            await pipe.execute()
        await self._call(what, run)

    async def drained(self) -> bool:
        """Nothing waiting and nothing delivered-but-unacknowledged, in the whole group."""
        c = self.config
        pending = await self._call("XPENDING", lambda: self.redis.xpending(c.stream, c.group))
        if int(pending["pending"]):
            return False
        return (await self._group_info())["lag"] == 0

    async def _group_info(self) -> dict[str, Any]:
        c = self.config
        groups = await self._call("XINFO GROUPS", lambda: self.redis.xinfo_groups(c.stream))
        for g in groups:
            if g["name"] == c.group:
                lag = g.get("lag")
                if lag is None:  # Redis cannot tell (entries deleted): count what is after the last delivery
                    lag = len(await self.redis.xrange(c.stream, min=f"({g['last-delivered-id']}", max="+"))
                return {"pending": int(g["pending"]), "lag": int(lag), "consumers": int(g["consumers"])}
        raise JobError(f"consumer group {c.group!r} does not exist on stream {c.stream!r}")

    # ------------------------------------------------------------------ observers

    async def stats(self) -> QueueStats:
        await self.ensure_group()
        c = self.config
        info = await self._group_info()
        submitted = await self._call("XLEN", lambda: self.redis.xlen(c.stream))
        counters = await self._call("HGETALL", lambda: self.redis.hgetall(c.counters))
        retried = int(counters.get("retried", 0))
        return QueueStats(queue=f"{c.stream} (group {c.group})", submitted=int(submitted) - retried,
                          waiting=info["lag"], in_flight=info["pending"], done=int(counters.get("done", 0)),
                          retried=retried, dead=int(counters.get("dead", 0)), consumers=info["consumers"])

    async def dead_letters(self, count: int = 100) -> list[tuple[Job, str]]:
        entries = await self._call("XRANGE", lambda: self.redis.xrange(self.config.dlq, count=count))
        return [(Job.from_json(f[PAYLOAD]), f.get("reason", "")) for _, f in entries]

    def source(self, *, concurrency: int = 4, idle_exit: float | None = None,
               consumer: str | None = None) -> RedisJobStream:
        return RedisJobStream(self, concurrency=concurrency, idle_exit=idle_exit, consumer=consumer)


def _entry(eid: str, fields: dict[str, str]) -> tuple[str, Job | str]:
    try:
        return eid, Job.from_json(fields.get(PAYLOAD, ""))
    except JobError as exc:
        return eid, str(exc)


@dataclass
class _Held:
    """A job handed to the pipeline; ``ids`` also holds duplicates of it that arrived meanwhile."""

    job: Job
    ids: list[str] = field(default_factory=list)


class RedisJobStream:
    """A JobSource over the consumer group: async iteration hands out jobs, the callbacks acknowledge."""

    def __init__(self, transport: RedisStreamsTransport, *, concurrency: int, idle_exit: float | None,
                 consumer: str | None) -> None:
        if concurrency < 1:
            raise ConfigError("jobs.concurrency", "must be >= 1")
        self.transport = transport
        self.consumer = consumer or consumer_name()
        self.concurrency = concurrency
        self.idle_exit = idle_exit
        self._in_flight: dict[str, _Held] = {}
        self._delayed: list[tuple[float, str, Job]] = []  # (not_before, entry id, job): retries not yet due
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._cursor = "0-0"
        self._beat: asyncio.Future[None] | None = None
        self.errors: list[str] = []  # acknowledgements that failed (the jobs will be reclaimed)

    def __iter__(self) -> Iterator[SourceFile]:
        raise TypeError("a Redis job stream is consumed with `async for` (IngestPipeline does)")

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()

    # ------------------------------------------------------------------ iteration

    async def __aiter__(self) -> AsyncIterator[SourceFile]:
        t = self.transport
        await t.ensure_group()
        if self._beat is None:
            self._beat = asyncio.ensure_future(self._heartbeat())
        idle_since = time.monotonic()
        while not self._stop.is_set():
            for src in self._due():
                yield src
            room = self.concurrency - len(self._in_flight)
            if room <= 0:
                await self._wait(t.config.block_s)
                continue
            entries = await self._fetch(room)
            for eid, job in entries:
                admitted = self._admit(eid, job)
                if admitted is not None:
                    yield admitted
            if entries or self._in_flight or self._delayed or self._tasks:
                idle_since = time.monotonic()
            elif self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit and await t.drained():
                return

    async def _fetch(self, room: int) -> list[tuple[str, Job | str]]:
        t = self.transport
        self._cursor, claimed = await t.reclaim(self.consumer, room, self._cursor)
        if claimed:
            log.info("reclaimed %d idle jobs from other consumers", len(claimed))
            return await self._screen(claimed)
        return await t.read(self.consumer, room, self._block_s())

    async def _screen(self, claimed: list[tuple[str, Job | str]]) -> list[tuple[str, Job | str]]:
        """A job handed out more than ``max_attempts`` times keeps killing (or hanging) its workers:
        dead-letter it instead of taking the next worker down too."""
        t = self.transport
        counts = await t.deliveries([eid for eid, _ in claimed])
        keep = []
        for eid, job in claimed:
            n = counts.get(eid, 0)
            if isinstance(job, Job) and n > t.config.max_attempts:
                reason = f"{job.path}: abandoned {n - 1} times (its worker died or hung while ingesting it)"
                self._spawn(t.dead_letter([eid], job, reason))
            else:
                keep.append((eid, job))
        return keep

    def _block_s(self) -> float | None:
        """Block on the stream no longer than the next due retry (None: do not block)."""
        wait = self.transport.config.block_s
        if self._delayed:
            wait = min(wait, self._delayed[0][0] - time.time())
        return wait if wait > 0.001 else None

    async def _wait(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def _admit(self, eid: str, job: Job | str) -> SourceFile | None:
        if isinstance(job, str):  # unreadable payload: straight to the dead-letter stream
            self._spawn(self.transport.dead_letter([eid], Job(uri="", path=""), job))
            return None
        held = self._in_flight.get(job.uri)
        if held is not None:  # the same file submitted again while it runs: acknowledged with it
            held.ids.append(eid)
            return None
        if job.not_before > time.time():
            heapq.heappush(self._delayed, (job.not_before, eid, job))
            return None
        self._in_flight[job.uri] = _Held(job, [eid])
        return job.source_file(token=eid)

    def _due(self) -> list[SourceFile]:
        out = []
        while self._delayed and self._delayed[0][0] <= time.time() and len(self._in_flight) < self.concurrency:
            _, eid, job = heapq.heappop(self._delayed)
            src = self._admit(eid, Job(job.uri, job.path, job.content_hash, job.options, job.attempts))
            if src is not None:
                out.append(src)
        return out

    async def _heartbeat(self) -> None:
        """Until closed, keep the jobs this worker holds from looking idle, even while the pipeline is
        busy and does not ask for more (so a live worker's long job is never reclaimed)."""
        t = self.transport
        while True:
            await asyncio.sleep(t.config.reclaim_idle_s / 3)
            try:
                await t.touch(self.consumer, self._held_ids())
            except JobError as exc:
                log.warning("heartbeat failed: %s", exc)

    def _held_ids(self) -> list[str]:
        return [i for h in self._in_flight.values() for i in h.ids] + [eid for _, eid, _ in self._delayed]

    # ------------------------------------------------------------------ outcomes (called by the pipeline)

    def committed(self, source: SourceFile) -> None:
        held = self._in_flight.pop(source.uri, None)
        self._changed.set()
        if held is not None:
            self._spawn(self.transport.ack(held.ids))

    def failed(self, source: SourceFile, reason: str) -> None:
        held = self._in_flight.pop(source.uri, None)
        self._changed.set()
        if held is None:
            return
        t, job = self.transport, held.job
        if job.attempts + 1 >= t.config.max_attempts:
            log.warning("%s: giving up after %d attempts: %s", job.path, job.attempts + 1, reason)
            self._spawn(t.dead_letter(held.ids, job, reason))
        else:
            delay = t.config.retry.delay(job.attempts)
            self._spawn(t.requeue(held.ids, job.retry(time.time() + delay)))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._settled)

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._changed.set()
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(str(task.exception()))
            log.error("job acknowledgement failed (the job stays pending and will be reclaimed): %s",
                      task.exception())

    async def aclose(self) -> None:
        """Wait for the acknowledgements still on their way, then stop the heartbeat."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
            self._beat = None
