"""One job stream for every broker: the logic once, each broker's I/O in a subclass.

The pipeline iterates a stream (``async for``) and calls ``committed()`` or ``failed()`` once for every
source it was handed. In between, ``BrokerJobStream`` keeps, whatever the broker:

* **in flight**: one held job per URI, with every delivery of it (``refs``). The same file delivered
  again while it runs rides along and is settled with it: it is never ingested twice at once.
* **the delayed heap**: retries whose not-before time has not come, soonest first, handed out when due
  and a slot is free. A fetch never blocks past the next due retry.
* **settlement**: each outcome goes to the broker in a task: ``ack`` when committed; when failed,
  ``requeue`` (attempts+1, a full-jitter not-before time) or, once the attempts are spent,
  ``dead_letter``. A settlement that fails is logged and kept in ``errors``; the job is not lost, the
  broker delivers it again. ``aclose()`` waits for every settlement.
* **idle exit**: with ``idle_exit`` the iteration ends once nothing was fetched, held or settling here
  for that long and the broker says the whole queue is drained.
* **stop** (SIGTERM): no more fetching; what was handed out still settles when the pipeline says.

A broker writes only its I/O, on its own delivery reference type ``R`` (a Redis entry id, a Kafka
(partition, offset), a BullMQ job being processed):

    open()                               connect, join the group, start its own background work
    fetch(room)                          up to ``room`` deliveries: (ref, Job or Unreadable)
    ack(refs)                            done
    requeue(refs, job, reason)           try again; ``job`` has attempts+1 and its not-before time
    dead_letter(refs, job, reason, raw)  out of attempts, or unreadable
    drained()                            nothing waiting or unfinished in the whole queue
    close()                              after the last settlement: stop its background work

and may refine ``wait_full`` (every slot busy), ``owns`` (a delayed delivery is still this worker's),
``attempts_allowed``, ``redeliver`` (a settlement failed for good), ``give_back`` (``aclose`` with jobs
the pipeline never finished) and ``token``.
Everything is async: there is no sync twin to keep in step.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from ..errors import ConfigError
from ..ingest.sources import SourceFile
from .base import Job, QueueConfig, StreamOptions, consumer_name

log = logging.getLogger(__name__)


class Configured(Protocol):
    """A transport, as its stream sees it: the queue's settings."""

    @property
    def config(self) -> QueueConfig: ...


R = TypeVar("R")  # a broker's handle on one delivery
T = TypeVar("T", bound=Configured)  # the broker's transport


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A delivery whose payload is not a job: dead-lettered at once with ``reason`` (``raw``: its start)."""

    reason: str
    raw: str = ""


UNREADABLE_JOB = Job(uri="", path="")  # what a dead letter names when the payload named nothing


@dataclass(slots=True)
class Held(Generic[R]):
    """A job handed to the pipeline; ``refs`` also holds the duplicates of it that arrived meanwhile."""

    job: Job
    refs: list[R]


class BrokerJobStream(ABC, Generic[R, T]):
    """An async job source over a broker's consumer: iteration hands out jobs, the callbacks settle them."""

    def __init__(self, transport: T, options: StreamOptions) -> None:
        if options.concurrency < 1:
            raise ConfigError("jobs.concurrency", "must be >= 1")
        self.transport = transport
        self.consumer = options.consumer or consumer_name()
        self.concurrency = options.concurrency
        self.idle_exit = options.idle_exit
        self.max_attempts = transport.config.max_attempts
        self.retry = transport.config.retry
        self.errors: list[str] = []  # settlements that failed (their jobs are delivered again)
        self._in_flight: dict[str, Held[R]] = {}  # URI -> the job handed out
        self._delayed: list[tuple[float, int, R, Job]] = []  # (not_before, tie-breaker, ref, job)
        self._seq = itertools.count()  # heap ties: never compare refs
        self._tasks: dict[asyncio.Future[None], list[R]] = {}  # settlements (and broker work) -> their refs
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()  # a slot freed, a settlement ended, a stop
        self._closing = False

    # ------------------------------------------------------------------ the broker's I/O

    @abstractmethod
    async def open(self) -> None:
        """Before the first fetch: connect, join the group, start the broker's own background work."""

    @abstractmethod
    async def fetch(self, room: int) -> list[tuple[R, Job | Unreadable]]:
        """Up to ``room`` new deliveries, waiting at most ``fetch_wait()`` for the first."""

    @abstractmethod
    async def ack(self, refs: list[R]) -> None:
        """Every store has the job: the broker forgets it."""

    @abstractmethod
    async def requeue(self, refs: list[R], job: Job, reason: str) -> None:
        """The job again, later: ``job`` carries attempts+1 and its not-before time."""

    @abstractmethod
    async def dead_letter(self, refs: list[R], job: Job, reason: str, raw: str) -> None:
        """No attempts left (or an unreadable payload, ``raw``): keep it with the reason, off the queue."""

    @abstractmethod
    async def drained(self) -> bool:
        """Nothing waiting and nothing delivered-but-unsettled in the whole queue (every worker's)."""

    @abstractmethod
    async def close(self) -> None:
        """After the last settlement: stop the broker's background work and leave."""

    @property
    def poll_s(self) -> float:
        """The longest a fetch, or a wait with every slot busy, blocks."""
        return 1.0

    async def wait_full(self) -> None:
        """Every slot is busy: wait for one to free up."""
        await self._wait(self.poll_s)

    def owns(self, ref: R) -> bool:
        """Whether a delayed delivery is still this worker's to hand out."""
        return True

    def attempts_allowed(self, ref: R) -> int:
        return self.max_attempts

    def redeliver(self, refs: list[R]) -> None:
        """Their settlement failed for good (the broker stayed away): see that they come again. By default
        the broker does it by itself (a pending entry is reclaimed, a locked job stalls)."""

    def give_back(self, refs: list[R]) -> None:
        """``aclose`` with jobs the pipeline never finished: by default they are left to the broker, which
        delivers them again (a reclaim, a rebalance)."""

    def token(self, ref: R) -> str:
        """The pipeline's handle on a delivery (``SourceFile.token``)."""
        return str(ref)

    # ------------------------------------------------------------------ iteration

    async def __aiter__(self) -> AsyncIterator[SourceFile]:
        await self.open()
        idle_since = time.monotonic()
        while not self._stop.is_set():
            for src in self._due():
                yield src
            room = self.concurrency - len(self._in_flight)
            if room <= 0:
                await self.wait_full()
                continue
            delivered = await self.fetch(room)
            for ref, job in delivered:
                admitted = self._admit(ref, job)
                if admitted is not None:
                    yield admitted
            if delivered or self._in_flight or self._delayed or self._tasks:
                idle_since = time.monotonic()
            elif self._idle_since(idle_since) and await self.drained():
                return

    def _idle_since(self, since: float) -> bool:
        return self.idle_exit is not None and time.monotonic() - since >= self.idle_exit

    def fetch_wait(self) -> float:
        """How long a fetch may block: ``poll_s``, less if a delayed retry falls due sooner."""
        wait = self.poll_s
        if self._delayed:
            wait = min(wait, self._delayed[0][0] - time.time())
        return max(wait, 0.0)

    def _admit(self, ref: R, job: Job | Unreadable) -> SourceFile | None:
        if isinstance(job, Unreadable):
            self._settle([ref], self.dead_letter([ref], UNREADABLE_JOB, job.reason, job.raw))
            return None
        return self._hold(ref, job)

    def _hold(self, ref: R, job: Job) -> SourceFile | None:
        held = self._in_flight.get(job.uri)
        if held is not None:  # the same file again while it runs: settled with it
            held.refs.append(ref)
            return None
        if job.not_before > time.time():
            heapq.heappush(self._delayed, (job.not_before, next(self._seq), ref, job))
            return None
        self._in_flight[job.uri] = Held(job, [ref])
        return job.source_file(token=self.token(ref))

    def _due(self) -> list[SourceFile]:
        out = []
        while self._delayed and self._delayed[0][0] <= time.time() and len(self._in_flight) < self.concurrency:
            _, _, ref, job = heapq.heappop(self._delayed)
            src = self._hold(ref, replace(job, not_before=0.0)) if self.owns(ref) else None
            if src is not None:
                out.append(src)
        return out

    def _drop_delayed(self, drop: Callable[[R], bool]) -> None:
        """Forget delayed deliveries that are no longer this worker's (a partition taken away)."""
        self._delayed = [d for d in self._delayed if not drop(d[2])]
        heapq.heapify(self._delayed)

    def held_refs(self) -> list[R]:
        """Every delivery held here: handed out, riding along, or delayed."""
        return [r for h in self._in_flight.values() for r in h.refs] + [d[2] for d in self._delayed]

    def settling_refs(self) -> list[R]:
        """Deliveries whose outcome is on its way to the broker."""
        return [r for refs in self._tasks.values() for r in refs]

    # ------------------------------------------------------------------ outcomes (called by the pipeline)

    def committed(self, source: SourceFile) -> None:
        held = self._take(source)
        if held is not None:
            self._settle(held.refs, self.ack(held.refs))

    def failed(self, source: SourceFile, reason: str) -> None:
        held = self._take(source)
        if held is None:
            return
        job = held.job
        if job.attempts + 1 >= self.attempts_allowed(held.refs[0]):
            log.warning("%s: giving up after %d attempts: %s", job.path, job.attempts + 1, reason)
            self._settle(held.refs, self.dead_letter(held.refs, job, reason, ""))
        else:
            again = job.retry(time.time() + self.retry.delay(job.attempts))
            self._settle(held.refs, self.requeue(held.refs, again, reason))

    def _take(self, source: SourceFile) -> Held[R] | None:
        held = self._in_flight.pop(source.uri, None)
        self._changed.set()  # a slot is free
        return held

    def _settle(self, refs: list[R], outcome: Awaitable[None]) -> None:
        """Send an outcome to the broker in a task; until it lands, ``settling_refs()`` lists ``refs``."""
        self._spawn(outcome, refs)

    def _spawn(self, work: Awaitable[None], refs: list[R] | None = None) -> asyncio.Future[None]:
        task = asyncio.ensure_future(work)
        self._tasks[task] = refs or []
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Future[None]) -> None:
        refs = self._tasks.pop(task, [])
        self._changed.set()
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(str(task.exception()))
            log.error("settling a job failed (it will be delivered again): %s", task.exception())
            if refs and not self._closing:
                self.redeliver(refs)

    # ------------------------------------------------------------------ stop and close

    def stop(self) -> None:
        """Stop fetching; jobs already handed out finish (and settle) or stay to be delivered again."""
        self._stop.set()
        self._changed.set()

    async def _wait(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    async def aclose(self) -> None:
        """Stop, give back what the pipeline never finished, wait for every settlement, then leave."""
        self._closing = True
        self.stop()
        refs = self.held_refs()
        self._in_flight.clear()
        self._delayed.clear()
        self.give_back(refs)
        await self._drain()
        await self.close()
        await self._drain()  # what the broker settled while closing

    async def _drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
