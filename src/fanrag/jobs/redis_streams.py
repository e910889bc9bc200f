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
    XTRIM MINID (a Lua script)           entries every group of the stream has acknowledged are deleted,
                                         by each worker's heartbeat and when it closes

Keys: ``<stream>``, ``<stream>.dlq`` and the hash ``<stream>.counters`` (done, retried, dead). A retry is
a new entry, so a duplicate delivery (at-least-once) is possible: ingestion is idempotent, and a file
already committed unchanged is acknowledged without work. Run Redis with AOF to survive its restarts.
The stream keeps only what some group has not acknowledged (``submitted`` counts from the stream's
``entries-added``, Redis 7+); the dead-letter stream is kept whole, for the operator.

URL: ``redis://host:port/db?stream=ingest-jobs&group=fanrag&max_attempts=5&retry_base=1&retry_cap=60
&reclaim_idle=60&block=1``; other query parameters go to redis-py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import ConfigError, JobError, require
from .base import QUEUE_FIELD, Job, QueueConfig, QueueStats, StreamOptions, broker_call, split_url
from .stream import BrokerJobStream, Unreadable

log = logging.getLogger(__name__)
T = TypeVar("T")
PAYLOAD = "job"

# Delete what every group has acknowledged: each group keeps its oldest pending entry and, if none, all
# after its last delivery; the stream keeps from the lowest of those. One script: atomic, so a group that
# is created or reads meanwhile loses nothing. (Ids are "ms-seq": compared as two numbers.)
TRIM_ACKED = """
local function parse(id)
  local ms, seq = string.match(id, "(%d+)-(%d+)")
  return tonumber(ms), tonumber(seq)
end
local bound_ms, bound_seq = nil, nil
for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  local ms, seq
  if pending[1] > 0 then ms, seq = parse(pending[2]) else
    ms, seq = parse(info['last-delivered-id'])
    seq = seq + 1
  end
  if bound_ms == nil or ms < bound_ms or (ms == bound_ms and seq < bound_seq) then
    bound_ms, bound_seq = ms, seq
  end
end
if bound_ms == nil then return 0 end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format("%d-%d", bound_ms, bound_seq))
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisQueueConfig(QueueConfig):
    url: str  # the connection URL, without fanrag's own query parameters
    stream: str = "ingest-jobs"
    group: str = "fanrag"
    reclaim_idle_s: float = 60.0
    block_s: float = 1.0

    @property
    def dlq(self) -> str:
        return f"{self.stream}.dlq"

    @property
    def counters(self) -> str:
        return f"{self.stream}.counters"


_OWN = {"stream", "group", "max_attempts", "retry_base", "retry_cap", "reclaim_idle", "block"}


def parse_url(url: str) -> RedisQueueConfig:
    conn, own = split_url(url, _OWN)
    try:
        cfg = RedisQueueConfig(
            url=conn, stream=own.get("stream", "ingest-jobs"), group=own.get("group", "fanrag"),
            **QueueConfig.retry_fields(own),
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
        """One Redis operation, retried over connection errors; its errors become JobError naming the
        operation and the stream."""
        self._connect()  # also sets the exception classes
        return await broker_call(f"redis {what}", fn, where=f"stream {self.config.stream!r}", errors=self._errors,
                                 transient=self._transient, policy=self.config.reconnect)

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

    async def read(self, consumer: str, count: int, block_s: float | None) -> list[tuple[str, Job | Unreadable]]:
        """New entries for this consumer (``block_s`` None: do not wait)."""
        c = self.config
        block = max(1, int(block_s * 1000)) if block_s else None
        reply = await self._call("XREADGROUP", lambda: self.redis.xreadgroup(
            c.group, consumer, {c.stream: ">"}, count=count, block=block))
        return [_entry(eid, fields) for _, entries in (reply or []) for eid, fields in entries]

    async def reclaim(self, consumer: str, count: int, start: str) -> tuple[str, list[tuple[str, Job | Unreadable]]]:
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

    async def trim(self) -> int:
        """Delete the entries every group has acknowledged; returns how many went."""
        script = self.redis.register_script(TRIM_ACKED)
        return int(await self._call("XTRIM", lambda: script(keys=[self.config.stream])))

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
        stream = await self._call("XINFO STREAM", lambda: self.redis.xinfo_stream(c.stream))
        added = int(stream.get("entries-added", stream["length"]))  # trimmed entries count (Redis 7+)
        counters = await self._call("HGETALL", lambda: self.redis.hgetall(c.counters))
        retried = int(counters.get("retried", 0))
        return QueueStats(queue=f"{c.stream} (group {c.group})", submitted=added - retried,
                          waiting=info["lag"], in_flight=info["pending"], done=int(counters.get("done", 0)),
                          retried=retried, dead=int(counters.get("dead", 0)), consumers=info["consumers"])

    async def dead_letters(self, count: int = 100) -> list[tuple[Job, str]]:
        entries = await self._call("XRANGE", lambda: self.redis.xrange(self.config.dlq, count=count))
        return [(Job.from_json(f[PAYLOAD]), f.get("reason", "")) for _, f in entries]

    def source(self, *, concurrency: int = 4, idle_exit: float | None = None,
               consumer: str | None = None) -> RedisJobStream:
        return RedisJobStream(self, StreamOptions(concurrency, idle_exit, consumer))


def _entry(eid: str, fields: dict[str, str]) -> tuple[str, Job | Unreadable]:
    try:
        return eid, Job.from_json(fields.get(PAYLOAD, ""))
    except JobError as exc:
        return eid, Unreadable(str(exc))


class RedisJobStream(BrokerJobStream[str, RedisStreamsTransport]):
    """The consumer group as a job stream: deliveries are entry ids; a heartbeat keeps held jobs fresh,
    XAUTOCLAIM takes over a dead worker's (see ``BrokerJobStream`` for the rest)."""

    def __init__(self, transport: RedisStreamsTransport, options: StreamOptions) -> None:
        super().__init__(transport, options)
        self._cursor = "0-0"  # where the next XAUTOCLAIM scan starts
        self._beat: asyncio.Future[None] | None = None

    @property
    def poll_s(self) -> float:
        return self.transport.config.block_s

    async def open(self) -> None:
        await self.transport.ensure_group()
        if self._beat is None:
            self._beat = asyncio.ensure_future(self._heartbeat())

    async def fetch(self, room: int) -> list[tuple[str, Job | Unreadable]]:
        t = self.transport
        self._cursor, claimed = await t.reclaim(self.consumer, room, self._cursor)
        if claimed:
            log.info("reclaimed %d idle jobs from other consumers", len(claimed))
            return await self._screen(claimed)
        wait = self.fetch_wait()
        return await t.read(self.consumer, room, wait if wait > 0.001 else None)

    async def _screen(self, claimed: list[tuple[str, Job | Unreadable]]) -> list[tuple[str, Job | Unreadable]]:
        """A job handed out more than ``max_attempts`` times keeps killing (or hanging) its workers:
        dead-letter it instead of taking the next worker down too."""
        counts = await self.transport.deliveries([eid for eid, _ in claimed])
        keep = []
        for eid, job in claimed:
            n = counts.get(eid, 0)
            if isinstance(job, Job) and n > self.max_attempts:
                reason = f"{job.path}: abandoned {n - 1} times (its worker died or hung while ingesting it)"
                self._settle([eid], self.dead_letter([eid], job, reason, ""))
            else:
                keep.append((eid, job))
        return keep

    async def ack(self, refs: list[str]) -> None:
        await self.transport.ack(refs)

    async def requeue(self, refs: list[str], job: Job, reason: str) -> None:
        await self.transport.requeue(refs, job)

    async def dead_letter(self, refs: list[str], job: Job, reason: str, raw: str) -> None:
        await self.transport.dead_letter(refs, job, reason)

    async def drained(self) -> bool:
        return await self.transport.drained()

    async def _heartbeat(self) -> None:
        """Until closed, keep the jobs this worker holds from looking idle, even while the pipeline is
        busy and does not ask for more (so a live worker's long job is never reclaimed); and trim."""
        t = self.transport
        while True:
            await asyncio.sleep(t.config.reclaim_idle_s / 3)
            try:
                await t.touch(self.consumer, self.held_refs())
                await t.trim()
            except JobError as exc:
                log.warning("heartbeat failed: %s", exc)

    async def close(self) -> None:
        """Stop the heartbeat; trim what this worker's acknowledgements freed."""
        if self._beat is None:  # never opened: nothing to trim (and maybe no server to reach)
            return
        self._beat.cancel()
        await asyncio.gather(self._beat, return_exceptions=True)
        self._beat = None
        try:
            await self.transport.trim()
        except JobError as exc:
            log.warning("trimming the stream failed: %s", exc)
