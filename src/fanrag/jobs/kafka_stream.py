"""The consumer side of the Kafka transport: a JobSource over a consumer group (see kafka.py).

Offsets are committed only from the pipeline's callbacks. Several jobs of one partition run at once and
finish in any order, so each partition commits up to its lowest offset still unfinished
(``PartitionOffsets``): a job done early waits for those before it, and a worker that dies leaves them
all to be delivered again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, JobError
from ..ingest.sources import SourceFile
from ..limits.backoff import RetryPolicy
from .base import Job, consumer_name

# Producing a retry or dead letter: about a minute of full-jitter retries before the job is left to be
# delivered again (after a restart or rebalance).
SETTLE_RETRY = RetryPolicy(max_retries=10, base_s=0.2, cap_s=10.0)

if TYPE_CHECKING:
    from .kafka import KafkaTransport

log = logging.getLogger(__name__)
Ref = tuple[Any, int]  # (TopicPartition, offset) of one message


class PartitionOffsets:
    """One partition's offsets handed out and not finished yet, and where its commit may go.

    Kafka commits a position, not single messages: committing N says every offset below N is done.
    So the commit point is the lowest offset still pending, or just past the last one handed out.
    """

    def __init__(self) -> None:
        self.pending: set[int] = set()
        self.next: int | None = None  # one past the highest offset handed out
        self.committed: int | None = None  # the group's position: where fetching started, or our last commit

    def delivered(self, offset: int) -> None:
        if self.committed is None:  # the first message fetched sits at the group's position
            self.committed = offset
        self.pending.add(offset)
        self.next = offset + 1 if self.next is None else max(self.next, offset + 1)

    def finished(self, offset: int) -> None:
        self.pending.discard(offset)

    def commit_point(self) -> int | None:
        """The offset to commit now (highest contiguous finished + 1), or None if that is no progress."""
        point = min(self.pending) if self.pending else self.next
        if point is None or (self.committed is not None and point <= self.committed):
            return None
        return point


@dataclass
class _Held:
    """A job handed to the pipeline; ``refs`` also holds duplicates of it that arrived meanwhile."""

    job: Job
    refs: list[Ref] = field(default_factory=list)


class KafkaJobStream:
    """A JobSource over the consumer group: async iteration hands out jobs, the callbacks commit."""

    def __init__(self, transport: KafkaTransport, *, concurrency: int, idle_exit: float | None,
                 consumer: str | None) -> None:
        if concurrency < 1:
            raise ConfigError("jobs.concurrency", "must be >= 1")
        self.transport = transport
        self.name = consumer or consumer_name()
        self.concurrency = concurrency
        self.idle_exit = idle_exit
        self._consumer: Any = None
        self._offsets: dict[Any, PartitionOffsets] = {}  # the partitions this worker owns
        self._revoking: set[Any] = set()
        self._settling: dict[Any, int] = {}  # partition -> retries / dead letters still being produced
        self._in_flight: dict[str, _Held] = {}
        self._delayed: list[tuple[float, int, Ref, Job]] = []  # retries not yet due
        self._seq = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        self._committer: asyncio.Task[None] | None = None
        self._dirty = False
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._report_due = asyncio.Event()
        self._reporter: asyncio.Task[None] | None = None
        self._closing = False
        self._last_poll = time.monotonic()
        self.errors: list[str] = []  # commits and produces that failed (the jobs will be delivered again)

    def __iter__(self) -> Iterator[SourceFile]:
        raise TypeError("a Kafka job stream is consumed with `async for` (IngestPipeline does)")

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()

    @property
    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._offsets)

    # ------------------------------------------------------------------ iteration

    async def __aiter__(self) -> AsyncIterator[SourceFile]:
        await self._start()
        idle_since = time.monotonic()
        while not self._stop.is_set():
            for src in self._due():
                yield src
            room = self.concurrency - len(self._in_flight)
            if room <= 0:
                await self._wait_full()
                continue
            records = await self._poll(room)
            for m in records:
                admitted = self._admit(m)
                if admitted is not None:
                    yield admitted
            if records or self._in_flight or self._delayed or self._tasks:
                idle_since = time.monotonic()
            elif self.idle_exit is not None and time.monotonic() - idle_since >= self.idle_exit and await self._drained():
                return

    async def _start(self) -> None:
        if self._consumer is not None:
            return
        t = self.transport
        c = t.config
        await t.ensure_topics()
        kafka = t.aiokafka()
        consumer = kafka.AIOKafkaConsumer(
            bootstrap_servers=c.servers, group_id=c.group, client_id=self.name, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=int(c.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(c.session_timeout_s * 1000 / 3)),
            rebalance_timeout_ms=int(c.rebalance_timeout_s * 1000),
            max_poll_interval_ms=int(c.max_poll_interval_s * 1000))
        consumer.subscribe([c.topic], listener=_listener(self, kafka.ConsumerRebalanceListener))
        try:
            await t.call("join group", consumer.start)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._reporter = asyncio.ensure_future(self._report_loop())

    async def _poll(self, room: int) -> list[Any]:
        wait = self.transport.config.poll_s
        if self._delayed:
            wait = min(wait, self._delayed[0][0] - time.time())
        batch = await self.transport.call("poll", lambda: self._consumer.getmany(
            timeout_ms=max(0, int(wait * 1000)), max_records=room))
        self._last_poll = time.monotonic()
        return [m for msgs in batch.values() for m in msgs]

    async def _wait_full(self) -> None:
        """All slots busy: wait for one to free up. A poll with every partition paused now and then tells
        the group this worker is alive (``max_poll_interval``) without taking more jobs."""
        c = self.transport.config
        if time.monotonic() - self._last_poll < c.max_poll_interval_s / 3:
            await self._wait(c.poll_s)
            return
        paused = set(self._consumer.assignment())
        self._consumer.pause(*paused)
        try:
            # Paused: nothing comes back, unless a rebalance assigned new (unpaused) partitions meanwhile;
            # those records are not taken now, so move the position back to them.
            for m in await self._poll(1):
                self._consumer.seek(self.transport.aiokafka().TopicPartition(m.topic, m.partition), m.offset)
        finally:
            self._consumer.resume(*(paused & set(self._consumer.assignment())))

    async def _wait(self, timeout: float) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    def _admit(self, m: Any) -> SourceFile | None:
        tp = self.transport.aiokafka().TopicPartition(m.topic, m.partition)
        offsets = self._offsets.get(tp)
        if offsets is None or tp in self._revoking:  # fetched before a rebalance took the partition
            return None
        offsets.delivered(m.offset)
        try:
            job = Job.from_json(m.value or b"")
        except JobError as exc:  # unreadable payload: straight to the dead-letter topic
            raw, reason = (m.value or b"")[:1000].decode("utf-8", "replace"), str(exc)
            self._settle([(tp, m.offset)], lambda: self._dead_letter(Job(uri="", path=""), reason, raw))
            return None
        return self._hold((tp, m.offset), job)

    def _hold(self, ref: Ref, job: Job) -> SourceFile | None:
        held = self._in_flight.get(job.uri)
        if held is not None:  # the same file submitted again while it runs: committed with it
            held.refs.append(ref)
            return None
        if job.not_before > time.time():
            heapq.heappush(self._delayed, (job.not_before, next(self._seq), ref, job))
            return None
        self._in_flight[job.uri] = _Held(job, [ref])
        self._report_due.set()
        return job.source_file(token=f"{ref[0].topic}/{ref[0].partition}/{ref[1]}")

    def _due(self) -> list[SourceFile]:
        out = []
        while self._delayed and self._delayed[0][0] <= time.time() and len(self._in_flight) < self.concurrency:
            _, _, ref, job = heapq.heappop(self._delayed)
            if ref[0] not in self._offsets or ref[0] in self._revoking:
                continue
            src = self._hold(ref, Job(job.uri, job.path, job.content_hash, job.options, job.attempts))
            if src is not None:
                out.append(src)
        return out

    async def _drained(self) -> bool:
        """Nothing held here, and the whole group has committed everything in the topic."""
        if self._in_flight or self._delayed or any(o.pending for o in self._offsets.values()):
            return False
        return sum((await self.transport.lag()).values()) == 0

    # ------------------------------------------------------------------ outcomes (called by the pipeline)

    def committed(self, source: SourceFile) -> None:
        held = self._in_flight.pop(source.uri, None)
        self._changed.set()
        if held is not None:
            self._finish(held.refs)

    def failed(self, source: SourceFile, reason: str) -> None:
        held = self._in_flight.pop(source.uri, None)
        self._changed.set()
        if held is None:
            return
        c, job = self.transport.config, held.job
        if job.attempts + 1 >= c.max_attempts:
            log.warning("%s: giving up after %d attempts: %s", job.path, job.attempts + 1, reason)
            self._settle(held.refs, lambda: self._dead_letter(job, reason))
        else:
            again = job.retry(time.time() + c.retry.delay(job.attempts))
            self._settle(held.refs, lambda: self._retry(again, reason))

    async def _retry(self, job: Job, reason: str) -> None:
        t = self.transport
        key = job.uri.encode()
        await t.produce(t.config.topic, [(key, job.to_json().encode())])
        note = {"attempts": job.attempts, "not_before": job.not_before, "reason": reason}
        await t.produce(t.config.retries, [(key, json.dumps(note).encode())])

    async def _dead_letter(self, job: Job, reason: str, raw: str = "") -> None:
        t = self.transport
        letter = {"job": job.to_json(), "reason": reason, "raw": raw, "worker": self.name}
        await t.produce(t.config.dlq, [(job.uri.encode() or None, json.dumps(letter).encode())])

    def _settle(self, refs: list[Ref], produce: Callable[[], Awaitable[None]]) -> None:
        """Produce the retry or dead letter, and only then let the offsets be committed. A failed produce is
        tried again (a broker blip must not hold the partition's commit point back for good)."""
        async def run() -> None:
            try:
                for attempt in range(SETTLE_RETRY.max_retries + 1):
                    try:
                        await produce()
                        break
                    except JobError as exc:
                        if attempt == SETTLE_RETRY.max_retries:
                            raise
                        log.warning("%s; trying again", exc)
                        await asyncio.sleep(SETTLE_RETRY.delay(attempt))
            finally:
                for tp, _ in refs:
                    self._settling[tp] -= 1
                self._changed.set()
            self._finish(refs)
        for tp, _ in refs:
            self._settling[tp] = self._settling.get(tp, 0) + 1
        self._spawn(run())

    def _finish(self, refs: list[Ref]) -> None:
        for tp, offset in refs:
            offsets = self._offsets.get(tp)
            if offsets is not None:  # else revoked meanwhile: the new owner runs it again
                offsets.finished(offset)
        self._report_due.set()
        self._dirty = True
        if self._committer is None or self._committer.done():
            self._committer = self._spawn(self._commit_loop())

    async def _commit_loop(self) -> None:
        while self._dirty:
            self._dirty = False
            await self._commit([tp for tp in self._offsets if tp not in self._revoking])

    async def _commit(self, partitions: list[Any]) -> None:
        points = {tp: p for tp in partitions if (p := self._offsets[tp].commit_point()) is not None}
        if not points or self._consumer is None:
            return
        await self.transport.call("commit", lambda: self._consumer.commit(points))
        for tp, point in points.items():
            if tp in self._offsets:
                self._offsets[tp].committed = point

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._settled)
        return task

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._changed.set()
        if not task.cancelled() and task.exception() is not None:
            self.errors.append(str(task.exception()))
            log.error("job commit failed (the job stays uncommitted and will be delivered again): %s",
                      task.exception())

    # ------------------------------------------------------------------ rebalance

    def _assigned(self, assigned: set[Any]) -> None:
        for tp in assigned:
            if tp.topic == self.transport.config.topic:
                self._offsets[tp] = PartitionOffsets()
        log.info("%s owns partitions %s", self.name, self.assignment)
        self._report_due.set()

    async def _revoked(self, revoked: set[Any]) -> None:
        """Hand partitions over: let their jobs in flight finish (up to the rebalance timeout), commit."""
        mine = set(revoked) & set(self._offsets)
        if not mine:
            return
        self._revoking |= mine
        self._delayed = [d for d in self._delayed if d[2][0] not in mine]
        heapq.heapify(self._delayed)
        deadline = time.monotonic() + 0.8 * self.transport.config.rebalance_timeout_s
        while not self._closing and self._busy(mine) and time.monotonic() < deadline:
            await self._wait(min(0.2, max(0.0, deadline - time.monotonic())))
        try:
            if self._committer is not None and not self._committer.done():  # no older commit lands after ours
                await asyncio.gather(asyncio.shield(self._committer), return_exceptions=True)
            await self._commit(list(mine))
        except JobError as exc:
            log.warning("commit before handing over partitions failed (they run again): %s", exc)
        for tp in mine:
            self._offsets.pop(tp, None)
        self._revoking -= mine
        self._report_due.set()

    def _busy(self, partitions: set[Any]) -> bool:
        return (any(self._settling.get(tp, 0) for tp in partitions)
                or any(tp in partitions for h in self._in_flight.values() for tp, _ in h.refs))

    # ------------------------------------------------------------------ reports on <topic>.workers

    async def _report_loop(self) -> None:
        """Tell ``stats()`` what this worker holds: on every change (at most 5 times a second) and every
        third of the session timeout (a report older than the session timeout counts as a dead worker)."""
        beat = self.transport.config.session_timeout_s / 3
        while True:
            try:
                await asyncio.wait_for(self._report_due.wait(), beat)
            except TimeoutError:
                pass
            self._report_due.clear()
            try:
                await self._report()
            except JobError as exc:
                log.warning("worker report failed: %s", exc)
            await asyncio.sleep(0.2)

    async def _report(self, final: bool = False) -> None:
        t = self.transport
        held = sum(len(o.pending) for o in self._offsets.values())
        value = None if final else json.dumps(
            {"in_flight": held, "partitions": self.assignment, "at": time.time()}).encode()
        await t.produce(t.config.workers, [(self.name.encode(), value)])

    async def aclose(self) -> None:
        """Wait for the commits and produces still on their way, then leave the group."""
        self._closing = True
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._reporter is not None:
            self._reporter.cancel()
            await asyncio.gather(self._reporter, return_exceptions=True)
            self._reporter = None
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await consumer.stop()
            try:
                await self._report(final=True)
            except JobError as exc:
                log.warning("final worker report failed: %s", exc)


def _listener(stream: KafkaJobStream, base: type) -> Any:
    """The stream as aiokafka's ConsumerRebalanceListener (subclassed here: aiokafka is an optional extra)."""
    class Listener(base):  # type: ignore[misc, valid-type]
        async def on_partitions_revoked(self, revoked: set[Any]) -> None:
            await stream._revoked(revoked)

        async def on_partitions_assigned(self, assigned: set[Any]) -> None:
            stream._assigned(assigned)
    return Listener()
