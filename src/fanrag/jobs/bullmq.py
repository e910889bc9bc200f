"""Document jobs on a BullMQ queue (the Python ``bullmq`` package): Node.js services and fanrag share it.

    // a Node.js service (npm bullmq), same Redis:
    await queue.add('ingest', { path: '/shared/docs/a.pdf' },
                    { attempts: 5, backoff: { type: 'exponential', delay: 1000, jitter: 1 } });

    fanrag worker --queue 'bullmq://127.0.0.1:6379/0?queue=ingest-jobs'

Job data (the BullMQ job's ``data``, JSON), the fields of a fanrag ``Job``:

    path          required: the file, on a filesystem the workers share (absolute, or relative to the
                  worker's working directory)
    uri           optional: by default the resolved path as a ``file://`` URI (fanrag.ids.source_uri)
    content_hash  optional
    options       optional object, e.g. ``{"password": "..."}`` for an encrypted PDF

Other keys are ignored; the job's name is free (fanrag uses ``ingest``). Data without a string ``path``
fails at once (``UnrecoverableError``) with the reason.

A bullmq ``Worker`` (``concurrency`` = fanrag's) takes jobs; its processor hands each file to the
pipeline and waits for the pipeline's callback, so the job is finished only after every store committed:

    committed()              → completed
    failed(), attempts left  → delayed, then waiting again: the job's own ``attempts`` and ``backoff``
                               options (BullMQ semantics). The delay is computed here as Node's BullMQ
                               does, because the Python package ignores ``backoff.jitter``: exponential
                               with ``jitter: 1`` is full jitter. An unknown (custom) backoff type gets
                               fanrag's full-jitter policy (``retry_base``, ``retry_cap``).
    failed(), last attempt   → failed, with the reason: the dead-letter set (``dead_letters()``)
    worker killed            → the job's lock lapses after ``lock_duration`` s; a live worker's stalled
                               check (every ``stalled_interval`` s) puts it back to wait, and fails it
                               after ``max_stalled`` stalls
    worker stopped (SIGTERM) → jobs taken but not yet handed out go back to wait (no attempt counted)

fanrag's own ``submit`` sets ``attempts=max_attempts`` and ``backoff={type: exponential,
delay: retry_base, jitter: 1}``; a job without ``attempts`` is tried once (BullMQ's default). Completed
and failed jobs are kept (BullMQ's default) unless the producer sets ``removeOnComplete``/``removeOnFail``.

URL: ``bullmq://host:port/db?queue=ingest-jobs&prefix=bull&max_attempts=5&retry_base=1&retry_cap=60
&lock_duration=30&stalled_interval=30&max_stalled=1&block=5`` (``bullmqs://`` for TLS); other query
parameters go to redis-py. The only key of fanrag's own is the hash ``<prefix>:<queue>:fanrag`` (the
count of retries fanrag workers made).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from ..errors import ConfigError, JobError, require
from ..limits.backoff import RetryPolicy
from .base import QUEUE_FIELD, Job, QueueConfig, QueueStats, StreamOptions, broker_call, split_url
from .stream import BrokerJobStream, Unreadable

log = logging.getLogger(__name__)
T = TypeVar("T")
JOB_NAME = "ingest"
POLL_S = 0.1  # how often an idle stream looks at the queue (for idle_exit) and at its bullmq worker


@dataclass(frozen=True, slots=True, kw_only=True)
class BullMQConfig(QueueConfig):
    connection: str  # the Redis URL, without fanrag's own query parameters
    queue: str = "ingest-jobs"
    prefix: str = "bull"
    lock_duration_s: float = 30.0
    stalled_interval_s: float = 30.0
    max_stalled: int = 1
    block_s: float = 5.0  # how long an idle bullmq worker blocks waiting for a job (drainDelay)

    @property
    def counters(self) -> str:
        return f"{self.prefix}:{self.queue}:fanrag"

    def job_options(self) -> dict[str, Any]:
        """fanrag's own submits: ``max_attempts`` tries, exponential backoff with full jitter."""
        return {"attempts": self.max_attempts,
                "backoff": {"type": "exponential", "delay": round(self.retry.base_s * 1000), "jitter": 1}}

    def worker_options(self, concurrency: int, name: str) -> dict[str, Any]:
        return {"connection": self.connection, "prefix": self.prefix, "concurrency": concurrency,
                "autorun": False, "name": name, "drainDelay": self.block_s,
                "lockDuration": round(self.lock_duration_s * 1000),
                "stalledInterval": round(self.stalled_interval_s * 1000), "maxStalledCount": self.max_stalled}


_OWN = {"queue", "prefix", "max_attempts", "retry_base", "retry_cap", "lock_duration", "stalled_interval",
        "max_stalled", "block"}


def parse_url(url: str) -> BullMQConfig:
    conn, own = split_url(url, _OWN, scheme="rediss" if url.startswith("bullmqs:") else "redis")
    try:
        cfg = BullMQConfig(
            connection=conn, queue=own.get("queue", "ingest-jobs"), prefix=own.get("prefix", "bull"),
            **QueueConfig.retry_fields(own),
            lock_duration_s=float(own.get("lock_duration", 30.0)),
            stalled_interval_s=float(own.get("stalled_interval", 30.0)),
            max_stalled=int(own.get("max_stalled", 1)), block_s=float(own.get("block", 5.0)))
    except ValueError as exc:
        raise ConfigError(QUEUE_FIELD, f"{url!r}: {exc}") from exc
    if (cfg.max_attempts < 1 or cfg.lock_duration_s <= 0 or cfg.stalled_interval_s <= 0 or cfg.max_stalled < 0
            or cfg.block_s <= 0 or not cfg.queue or not cfg.prefix):
        raise ConfigError(QUEUE_FIELD, f"{url!r}: need max_attempts >= 1, lock_duration > 0, stalled_interval > 0, "
                          "max_stalled >= 0, block > 0, a queue and a prefix")
    return cfg


# ---------------------------------------------------------------------- the job schema


def job_data(job: Job) -> dict[str, Any]:
    """A fanrag job as BullMQ job data (what a Node.js producer writes too)."""
    return {"path": job.path, "uri": job.uri, "content_hash": job.content_hash, "options": job.options}


def job_from_data(data: Any, attempts: int = 0) -> Job:
    """A fanrag job from BullMQ job data; ``{"path": ...}`` alone is enough."""
    from ..ids import source_uri

    if not isinstance(data, dict) or not isinstance(data.get("path"), str) or not data["path"]:
        raise JobError(f"malformed job data (need an object with a string \"path\"): {json.dumps(data)[:200]}")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise JobError(f"malformed job data: \"options\" must be an object, not {json.dumps(options)[:100]}")
    path = str(Path(data["path"]).resolve())
    return Job(uri=str(data.get("uri") or source_uri(path)), path=path,
               content_hash=str(data.get("content_hash") or ""), options=options, attempts=attempts)


def retry_delay_ms(backoff: Any, attempts_made: int, fallback: RetryPolicy,
                   rng: Callable[[], float] = random.random) -> int:
    """Milliseconds before the next try, after ``attempts_made`` (>= 1) failed ones, as Node's BullMQ
    computes it (``jitter`` included, which the Python package ignores); no backoff: at once."""
    if isinstance(backoff, int | float):
        backoff = {"type": "fixed", "delay": backoff}
    if not isinstance(backoff, dict) or not backoff:
        return 0
    kind, delay = backoff.get("type"), float(backoff.get("delay") or 0)
    if kind == "exponential":
        top = 2.0 ** (attempts_made - 1) * delay
    elif kind == "fixed":
        top = delay
    else:  # a custom strategy registered by the producer's own (Node) workers: fanrag's policy instead
        return round(fallback.delay(attempts_made - 1) * 1000)
    jitter = min(max(float(backoff.get("jitter") or 0), 0.0), 1.0)
    if jitter > 0:
        return math.floor(rng() * top * jitter + top * (1 - jitter))
    return round(top)


# ---------------------------------------------------------------------- the transport


@dataclass(frozen=True, slots=True)
class BullMQStats(QueueStats):
    """``waiting`` counts wait + prioritized + delayed; ``delayed`` (retries on their backoff) apart too.
    ``consumers``: distinct worker names on the queue's Redis connections (every fanrag worker has its own;
    unnamed workers of other services count as one)."""

    delayed: int = 0


class BullMQTransport:
    def __init__(self, config: BullMQConfig) -> None:
        self.config = config
        self._queue: Any = None

    @classmethod
    def from_url(cls, url: str) -> BullMQTransport:
        return cls(parse_url(url))

    @property
    def queue(self) -> Any:
        """The ``bullmq.Queue`` (producer side and observers), opened on first use."""
        if self._queue is None:
            bullmq = require("bullmq", feature="BullMQ job queue", extra="bullmq")
            self._queue = bullmq.Queue(self.config.queue, {"connection": self.config.connection,
                                                            "prefix": self.config.prefix})
        return self._queue

    async def _call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One queue operation; Redis and bullmq errors become JobError naming it and the queue."""
        exceptions = require("redis.exceptions", feature="BullMQ job queue", extra="bullmq")
        return await broker_call(f"bullmq {what}", fn, where=f"queue {self.config.queue!r}",
                                 errors=(exceptions.RedisError, OSError))

    async def ping(self) -> None:
        """Fail fast (about a minute: ``reconnect``) on an unreachable Redis, where bullmq's own client
        retries for minutes."""
        aioredis = require("redis.asyncio", feature="BullMQ job queue", extra="bullmq")
        exceptions = require("redis.exceptions", feature="BullMQ job queue", extra="bullmq")
        client = aioredis.from_url(self.config.connection, socket_connect_timeout=5)
        try:
            await broker_call("bullmq PING", client.ping, where=f"queue {self.config.queue!r}",
                              errors=(exceptions.RedisError, OSError), policy=self.config.reconnect,
                              transient=(exceptions.ConnectionError, exceptions.TimeoutError, OSError))
        finally:
            await client.aclose()

    async def aclose(self) -> None:
        if self._queue is not None:
            await self._queue.close()
            self._queue = None

    # ------------------------------------------------------------------ producer

    async def submit(self, jobs: Iterable[Job]) -> list[str]:
        opts = self.config.job_options()
        batch = [{"name": JOB_NAME, "data": job_data(job), "opts": dict(opts)} for job in jobs]
        if not batch:
            return []
        added = await self._call("addBulk", lambda: self.queue.addBulk(batch))
        return [str(job.id) for job in added]

    # ------------------------------------------------------------------ observers

    async def counts(self) -> dict[str, int]:
        return dict(await self._call("getJobCounts", lambda: self.queue.getJobCounts()))

    async def drained(self) -> bool:
        """Nothing waiting, delayed or active in the whole queue (any worker's)."""
        c = await self.counts()
        return c.get("waiting", 0) + c.get("prioritized", 0) + c.get("delayed", 0) + c.get("active", 0) == 0

    async def count_retry(self) -> None:
        await self._call("HINCRBY", lambda: self.queue.client.hincrby(self.config.counters, "retried", 1))

    async def stats(self) -> BullMQStats:
        c = await self.counts()
        workers = await self._call("CLIENT LIST", lambda: self.queue.get_workers())
        retried = await self._call("HGET", lambda: self.queue.client.hget(self.config.counters, "retried"))
        waiting = c.get("waiting", 0) + c.get("prioritized", 0) + c.get("delayed", 0)
        return BullMQStats(queue=f"{self.config.prefix}:{self.config.queue} (bullmq)", submitted=sum(c.values()),
                           waiting=waiting, in_flight=c.get("active", 0), done=c.get("completed", 0),
                           retried=int(retried or 0), dead=c.get("failed", 0),
                           consumers=len({w.get("rawname") for w in workers}),
                           delayed=c.get("delayed", 0))

    async def dead_letters(self, count: int = 100) -> list[tuple[Job, str]]:
        """Jobs in BullMQ's failed set, oldest first; ``Job.attempts`` counts the tries before the last."""
        failed = await self._call("getJobs", lambda: self.queue.getJobs(["failed"], 0, count - 1, asc=True))
        out = []
        for bjob in failed:
            tries = max(int(bjob.attemptsMade or 0) - 1, 0)
            try:
                job = job_from_data(bjob.data, attempts=tries)
            except JobError:
                job = Job(uri="", path=json.dumps(bjob.data)[:200], attempts=tries)
            out.append((job, str(bjob.failedReason or "")))
        return out

    def source(self, *, concurrency: int = 4, idle_exit: float | None = None,
               consumer: str | None = None) -> BullMQJobStream:
        return BullMQJobStream(self, StreamOptions(concurrency, idle_exit, consumer))


# ---------------------------------------------------------------------- the consumer


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What the processor does with its job once the pipeline is done (or gives it back unprocessed)."""

    kind: Literal["done", "retry", "dead", "release"]
    reason: str = ""


DONE, RELEASE = _Outcome("done"), _Outcome("release")


@dataclass(eq=False, slots=True)
class _Delivery:
    """A BullMQ job its processor holds (its lock renewed) until the stream settles ``outcome``."""

    bjob: Any
    token: str
    job: Job | Unreadable
    outcome: asyncio.Future[_Outcome]

    def settle(self, outcome: _Outcome) -> None:
        if not self.outcome.done():
            self.outcome.set_result(outcome)


class BullMQJobStream(BrokerJobStream[_Delivery, BullMQTransport]):
    """A job stream over a bullmq Worker: its processor queues each delivery for the iteration and waits
    for the stream to settle it, so BullMQ finishes the job (and renews its lock meanwhile) only then.
    Retries wait in BullMQ's delayed set, so the stream's delayed heap stays empty here."""

    def __init__(self, transport: BullMQTransport, options: StreamOptions) -> None:
        super().__init__(transport, options)
        self._ready: asyncio.Queue[_Delivery] = asyncio.Queue()  # delivered, not yet fetched
        self._worker: Any = None
        self._run: asyncio.Future[None] | None = None
        self._pausing: asyncio.Future[None] | None = None

    # ------------------------------------------------------------------ the stream's I/O

    @property
    def poll_s(self) -> float:
        return POLL_S

    async def open(self) -> None:
        await self.transport.ping()
        if self._worker is not None:
            return
        bullmq = require("bullmq", feature="BullMQ job queue", extra="bullmq")
        c = self.transport.config
        self._worker = bullmq.Worker(c.queue, self._process, c.worker_options(self.concurrency, self.consumer))
        self._worker.on("error", self._on_error)
        self._run = asyncio.ensure_future(self._worker.run())

    async def fetch(self, room: int) -> list[tuple[_Delivery, Job | Unreadable]]:
        self._check_worker()
        try:
            got = [await asyncio.wait_for(self._ready.get(), self.fetch_wait())]
        except TimeoutError:
            return []
        while len(got) < room and not self._ready.empty():
            got.append(self._ready.get_nowait())
        return [(d, d.job) for d in got]

    async def ack(self, refs: list[_Delivery]) -> None:
        for d in refs:
            d.settle(DONE)

    async def requeue(self, refs: list[_Delivery], job: Job, reason: str) -> None:
        """BullMQ's own delayed set, after the job's own backoff (``job.not_before`` is fanrag's)."""
        for d in refs:
            d.settle(_Outcome("retry", reason))

    async def dead_letter(self, refs: list[_Delivery], job: Job, reason: str, raw: str) -> None:
        for d in refs:
            d.settle(_Outcome("dead", reason))

    async def drained(self) -> bool:
        return await self.transport.drained()

    def attempts_allowed(self, ref: _Delivery) -> int:
        return _attempts(ref.bjob)

    def give_back(self, refs: list[_Delivery]) -> None:
        for d in refs:
            d.settle(RELEASE)

    def token(self, ref: _Delivery) -> str:
        return str(ref.bjob.id)

    def _check_worker(self) -> None:
        if self._run is not None and self._run.done() and not self._stop.is_set():
            exc = None if self._run.cancelled() else self._run.exception()
            raise JobError(f"bullmq worker on queue {self.transport.config.queue!r} stopped: {exc or 'no reason'}")

    def _on_error(self, err: BaseException, *_: Any) -> None:
        self.errors.append(str(err))
        log.warning("bullmq worker on queue %r: %s", self.transport.config.queue, err)

    # ------------------------------------------------------------------ the bullmq processor

    async def _process(self, bjob: Any, token: str) -> dict[str, str]:
        try:
            job: Job | Unreadable = job_from_data(bjob.data, attempts=int(bjob.attemptsMade or 0))
        except JobError as exc:
            job = Unreadable(str(exc))
        delivery = _Delivery(bjob, token, job, asyncio.get_running_loop().create_future())
        if self._stop.is_set():
            delivery.settle(RELEASE)
        else:
            self._ready.put_nowait(delivery)
        return await self._apply(delivery, await asyncio.shield(delivery.outcome))

    async def _apply(self, d: _Delivery, outcome: _Outcome) -> dict[str, str]:
        """Completed (the return), failed, back to wait, or delayed: the last two raise DelayedError."""
        bullmq = require("bullmq", feature="BullMQ job queue", extra="bullmq")
        made = int(d.bjob.attemptsMade or 0) + 1
        if outcome.kind == "done":
            return {"uri": d.job.uri if isinstance(d.job, Job) else ""}
        if outcome.kind == "dead" or (outcome.kind == "retry" and made >= _attempts(d.bjob)):
            raise bullmq.UnrecoverableError(outcome.reason)  # to the failed set, with the reason
        if outcome.kind == "release":  # not an attempt: due again at once
            await d.bjob.moveToDelayed(round(time.time() * 1000), d.token)
        else:
            delay = retry_delay_ms(d.bjob.opts.get("backoff"), made, self.retry)
            await d.bjob.backend.moveToDelayed(d.bjob.id, round(time.time() * 1000), delay, d.token,
                                               {"fieldsToUpdate": {"failedReason": outcome.reason}})
            self._spawn(self.transport.count_retry())
        raise bullmq.DelayedError()

    # ------------------------------------------------------------------ shutdown

    def stop(self) -> None:
        """Stop taking jobs; those delivered but not handed out go back to wait, those handed out finish."""
        super().stop()
        while not self._ready.empty():
            self._ready.get_nowait().settle(RELEASE)
        if self._worker is not None and self._pausing is None:
            # Paused, not closed: a closing bullmq worker stops renewing the locks of the jobs still running.
            self._pausing = asyncio.ensure_future(self._worker.pause(do_not_wait_active=True))

    async def close(self) -> None:
        """Wait for the bullmq worker to finish every job (each has its outcome by now)."""
        if self._pausing is not None:
            await self._pausing
        if self._worker is not None:
            await self._worker.close()
        if self._run is not None:
            await asyncio.gather(self._run, return_exceptions=True)


def _attempts(bjob: Any) -> int:
    """The tries a BullMQ job allows (its ``attempts`` option; BullMQ's default is one)."""
    return max(int(bjob.opts.get("attempts") or 1), 1)
