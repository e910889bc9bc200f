"""The consumer side of the Kafka transport: a job stream over a consumer group (see kafka.py).

Offsets are committed only from the pipeline's callbacks. Several jobs of one partition run at once and
finish in any order, so each partition commits up to its lowest offset still unfinished
(``PartitionOffsets``): a job done early waits for those before it, and a worker that dies leaves them
all to be delivered again. In-flight de-duplication, the retry heap, settlement and idle exit are
``BrokerJobStream``'s; what is Kafka's own is the commit point, the rebalance listener, the paused poll
that keeps a busy worker in the group, and the reports on ``<topic>.workers``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..errors import JobError
from .base import Job, StreamOptions, retrying
from .stream import BrokerJobStream, Unreadable

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


class KafkaJobStream(BrokerJobStream[Ref, "KafkaTransport"]):
    """The consumer group as a job stream: deliveries are (partition, offset); settling one moves its
    partition's commit point (see ``BrokerJobStream`` for the rest)."""

    def __init__(self, transport: KafkaTransport, options: StreamOptions) -> None:
        super().__init__(transport, options)
        self._consumer: Any = None
        self._offsets: dict[Any, PartitionOffsets] = {}  # the partitions this worker owns
        self._revoking: set[Any] = set()
        self._committer: asyncio.Future[None] | None = None
        self._dirty = False
        self._report_due = asyncio.Event()
        self._reporter: asyncio.Future[None] | None = None
        self._last_poll = time.monotonic()

    @property
    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._offsets)

    # ------------------------------------------------------------------ the stream's I/O

    @property
    def poll_s(self) -> float:
        return self.transport.config.poll_s

    async def open(self) -> None:
        if self._consumer is not None:
            return
        t = self.transport
        c = t.config
        await t.ensure_topics()
        kafka = t.aiokafka()
        consumer = kafka.AIOKafkaConsumer(
            bootstrap_servers=c.servers, group_id=c.group, client_id=self.consumer, enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=int(c.session_timeout_s * 1000),
            heartbeat_interval_ms=max(100, int(c.session_timeout_s * 1000 / 3)),
            rebalance_timeout_ms=int(c.rebalance_timeout_s * 1000),
            max_poll_interval_ms=int(c.max_poll_interval_s * 1000))
        consumer.subscribe([c.topic], listener=_listener(self, kafka.ConsumerRebalanceListener))
        self._consumer = await t.started("join group", consumer)
        self._reporter = asyncio.ensure_future(self._report_loop())

    async def fetch(self, room: int) -> list[tuple[Ref, Job | Unreadable]]:
        out = [d for m in await self._poll(room) if (d := self._delivery(m)) is not None]
        if out:
            self._report_due.set()
        return out

    async def _poll(self, room: int) -> list[Any]:
        batch = await self.transport.call("poll", lambda: self._consumer.getmany(
            timeout_ms=int(self.fetch_wait() * 1000), max_records=room))
        self._last_poll = time.monotonic()
        return [m for msgs in batch.values() for m in msgs]

    def _delivery(self, m: Any) -> tuple[Ref, Job | Unreadable] | None:
        tp = self.transport.aiokafka().TopicPartition(m.topic, m.partition)
        offsets = self._offsets.get(tp)
        if offsets is None or tp in self._revoking:  # fetched before a rebalance took the partition
            return None
        offsets.delivered(m.offset)
        try:
            return (tp, m.offset), Job.from_json(m.value or b"")
        except JobError as exc:
            return (tp, m.offset), Unreadable(str(exc), (m.value or b"")[:1000].decode("utf-8", "replace"))

    async def wait_full(self) -> None:
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

    def redeliver(self, refs: list[Ref]) -> None:
        """A retry or dead letter could not be produced, so the commit point stays before these offsets:
        fetch them again (whatever after them is fetched again too rides along or runs unchanged)."""
        lowest: dict[Any, int] = {}
        for tp, offset in refs:
            if self.owns((tp, offset)) and self._consumer is not None:
                lowest[tp] = min(offset, lowest.get(tp, offset))
        for tp, offset in lowest.items():
            log.warning("%s: fetching again from offset %d", self.token((tp, offset)), offset)
            self._consumer.seek(tp, offset)

    def owns(self, ref: Ref) -> bool:
        return ref[0] in self._offsets and ref[0] not in self._revoking

    def token(self, ref: Ref) -> str:
        return f"{ref[0].topic}/{ref[0].partition}/{ref[1]}"

    async def drained(self) -> bool:
        """Nothing unfinished here, and the whole group has committed everything in the topic."""
        if any(o.pending for o in self._offsets.values()):
            return False
        return sum((await self.transport.lag()).values()) == 0

    # ------------------------------------------------------------------ settlement: produce, then commit

    async def ack(self, refs: list[Ref]) -> None:
        self._finish(refs)

    async def requeue(self, refs: list[Ref], job: Job, reason: str) -> None:
        t = self.transport
        key = job.uri.encode()
        note = {"attempts": job.attempts, "not_before": job.not_before, "reason": reason}
        await self._produce(lambda: t.produce(t.config.topic, [(key, job.to_json().encode())]))
        await self._produce(lambda: t.produce(t.config.retries, [(key, json.dumps(note).encode())]))
        self._finish(refs)

    async def dead_letter(self, refs: list[Ref], job: Job, reason: str, raw: str) -> None:
        t = self.transport
        letter = {"job": job.to_json(), "reason": reason, "raw": raw, "worker": self.consumer}
        message = (job.uri.encode() or None, json.dumps(letter).encode())
        await self._produce(lambda: t.produce(t.config.dlq, [message]))
        self._finish(refs)

    async def _produce(self, send: Callable[[], Awaitable[Any]]) -> None:
        """Produce before committing past the job; a failed produce is tried again for about a minute
        (``reconnect``: a broker blip must not hold the partition's commit point back for good)."""
        await retrying("kafka produce", send, self.transport.config.reconnect, (JobError,))

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

    # ------------------------------------------------------------------ rebalance

    def _assigned(self, assigned: set[Any]) -> None:
        for tp in assigned:
            if tp.topic == self.transport.config.topic:
                self._offsets[tp] = PartitionOffsets()
        log.info("%s owns partitions %s", self.consumer, self.assignment)
        self._report_due.set()

    async def _revoked(self, revoked: set[Any]) -> None:
        """Hand partitions over: let their jobs in flight finish (up to the rebalance timeout), commit."""
        mine = set(revoked) & set(self._offsets)
        if not mine:
            return
        self._revoking |= mine
        self._drop_delayed(lambda ref: ref[0] in mine)
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
        """Jobs of these partitions still in flight here, or settling."""
        refs = self.settling_refs() + [r for h in self._in_flight.values() for r in h.refs]
        return any(tp in partitions for tp, _ in refs)

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
        await t.produce(t.config.workers, [(self.consumer.encode(), value)])

    async def close(self) -> None:
        """After the last commit: stop reporting, leave the group, and say so on ``<topic>.workers``."""
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
