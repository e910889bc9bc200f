"""Document jobs on a Kafka topic with a consumer group (aiokafka).

    produce <topic> key=uri {job}        submit: one message per file, keyed by its URI, so one document
                                         always lands on one partition (and its retries after it)
    consumer group <group>               workers share the partitions; each takes up to ``concurrency``
                                         jobs at once and commits offsets itself (no auto-commit)
    commit offset                        only from the pipeline's committed()/failed() callbacks, per
                                         partition up to the highest *contiguous* finished offset + 1
    failed(): produce <topic> again      with attempts+1 and a not-before time (exponential backoff, full
                                         jitter), and a record on <topic>.retries; after ``max_attempts``
                                         produce <topic>.dlq with the reason instead; then commit
    partitions revoked (rebalance)       stop handing out their jobs, let those in flight finish (up to the
                                         rebalance timeout), commit, hand over; what was not committed is
                                         delivered again to the new owner

Topics: ``<topic>`` (``partitions``), ``<topic>.dlq``, ``<topic>.retries`` and the compacted
``<topic>.workers`` (each live worker's jobs in flight, refreshed every third of the session timeout),
all created when first needed.

At-least-once: a worker killed before it commits leaves its jobs to be delivered again (after the session
timeout, when the group rebalances). Ingestion is idempotent, and a file already committed unchanged is
acknowledged without work, so every document still ends up exactly once in every store.

A retry waits (its not-before time) in the worker that reads it, on the same partition as the
document's other jobs; until it runs, that partition's commit point stays behind it. Every rebalance
revokes all of a worker's partitions (the eager protocol): it drains its jobs in flight first.

What Kafka can and cannot count (``stats()``; counts are of messages, since the topics were created):

* ``waiting + in_flight`` is the group's lag, exact: Σ over partitions of end offset − committed offset
  (``lag()`` gives it per partition). Kafka keeps no per-message acknowledgement, so the split between
  the two comes from the workers' own reports on ``<topic>.workers`` (messages taken and not finished,
  retries waiting included); a killed worker's report expires after its session timeout.
* ``retried`` and ``dead`` are the sizes of ``<topic>.retries`` and ``<topic>.dlq``; ``submitted`` is the
  size of ``<topic>`` less the retries; ``done`` is what the committed offsets cover less retried and
  dead. A worker killed between producing a retry (or a dead letter) and committing its offset makes
  the job run again and may count it twice; a malformed payload counts as dead.
* ``consumers`` is the number of live worker reports, not the group's membership as the broker sees it.

URL: ``kafka://host:port[,host2:port]/ingest-jobs?group=fanrag&partitions=4&max_attempts=5&retry_base=1
&retry_cap=60&session_timeout=10&rebalance_timeout=60&max_poll_interval=300&poll=1&replication=-1
&batch_bytes=16384``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigError, JobError, require
from .base import QUEUE_FIELD, Job, QueueConfig, QueueStats, StreamOptions, broker_call
from .kafka_stream import KafkaJobStream, PartitionOffsets

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_PAYLOAD_BYTES = 64 << 10  # a job names a file; anything this big is not a file reference
DEFAULT_PORT = 9092
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,200}")
_TOPIC_EXISTS = 36  # Kafka error code TOPIC_ALREADY_EXISTS


@dataclass(frozen=True, slots=True, kw_only=True)
class KafkaQueueConfig(QueueConfig):
    bootstrap: tuple[str, ...]  # host:port of the brokers to bootstrap from
    topic: str = "ingest-jobs"
    group: str = "fanrag"
    partitions: int = 4
    replication: int = -1  # -1: the broker's default.replication.factor
    session_timeout_s: float = 10.0  # a killed worker's partitions move after this long
    rebalance_timeout_s: float = 60.0  # how long a worker may finish revoked jobs before handing over
    max_poll_interval_s: float = 300.0  # the longest a worker may hold its full set of jobs without reading
    poll_s: float = 1.0
    batch_bytes: int = 16384  # the producer's batch.size (per partition)

    @property
    def dlq(self) -> str:
        return f"{self.topic}.dlq"

    @property
    def retries(self) -> str:
        return f"{self.topic}.retries"

    @property
    def workers(self) -> str:
        return f"{self.topic}.workers"

    @property
    def servers(self) -> str:
        return ",".join(self.bootstrap)


_PARAMS: dict[str, Callable[[str], Any]] = {
    "group": str, "partitions": int, "replication": int, "max_attempts": int, "retry_base": float,
    "retry_cap": float, "session_timeout": float, "rebalance_timeout": float, "max_poll_interval": float,
    "poll": float, "batch_bytes": int,
}


def parse_url(url: str) -> KafkaQueueConfig:
    """``kafka://host:port[,host:port]/topic?...``; every mistake is a ConfigError on ``jobs.queue``."""
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise ConfigError(QUEUE_FIELD, f"{url!r}: the scheme must be kafka://")
    bootstrap = tuple(_server(url, s) for s in parts.netloc.split(","))
    topic = parts.path.strip("/") or "ingest-jobs"
    if not _TOPIC.fullmatch(topic):
        raise ConfigError(QUEUE_FIELD, f"{url!r}: topic {topic!r} must be 1-200 of [A-Za-z0-9._-]")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_PARAMS))
    if unknown:
        raise ConfigError(QUEUE_FIELD, f"{url!r}: unknown parameter(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(_PARAMS))}")
    values: dict[str, Any] = {}
    for key, text in query.items():
        try:
            values[key] = _PARAMS[key](text)
        except ValueError:
            raise ConfigError(QUEUE_FIELD, f"{url!r}: {key}={text!r} is not a number") from None
    cfg = KafkaQueueConfig(
        bootstrap=bootstrap, topic=topic, group=values.get("group", "fanrag"),
        partitions=values.get("partitions", 4), replication=values.get("replication", -1),
        **QueueConfig.retry_fields(values),
        session_timeout_s=values.get("session_timeout", 10.0),
        rebalance_timeout_s=values.get("rebalance_timeout", 60.0),
        max_poll_interval_s=values.get("max_poll_interval", 300.0), poll_s=values.get("poll", 1.0),
        batch_bytes=values.get("batch_bytes", 16384))
    _check(url, cfg)
    return cfg


def _server(url: str, text: str) -> str:
    host, _, port = text.strip().rpartition(":") if ":" in text else (text.strip(), "", str(DEFAULT_PORT))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(QUEUE_FIELD, f"{url!r}: broker {text!r} is not host:port")
    return f"{host}:{int(port)}"


def _check(url: str, c: KafkaQueueConfig) -> None:
    problems = [
        ("group", bool(c.group)), ("partitions", c.partitions >= 1),
        ("replication", c.replication == -1 or c.replication >= 1), ("max_attempts", c.max_attempts >= 1),
        ("retry_base", c.retry.base_s >= 0), ("retry_cap", c.retry.cap_s >= c.retry.base_s),
        ("session_timeout", c.session_timeout_s >= 1), ("rebalance_timeout", c.rebalance_timeout_s >= 1),
        ("max_poll_interval", c.max_poll_interval_s >= 1), ("poll", c.poll_s > 0), ("batch_bytes", c.batch_bytes >= 1)]
    bad = [name for name, ok in problems if not ok]
    if bad:
        raise ConfigError(QUEUE_FIELD, f"{url!r}: bad {', '.join(bad)} (need group non-empty, partitions >= 1, "
                          "replication -1 or >= 1, max_attempts >= 1, 0 <= retry_base <= retry_cap, "
                          "timeouts >= 1 s, poll > 0, batch_bytes >= 1)")


class KafkaTransport:
    """The producer side, the queue's observers, and the factory of consumers (``source()``)."""

    def __init__(self, config: KafkaQueueConfig) -> None:
        self.config = config
        self._producer: Any = None
        self._inspector: Any = None
        self._topics_ready = False
        self._lock = asyncio.Lock()

    @classmethod
    def from_url(cls, url: str) -> KafkaTransport:
        return cls(parse_url(url))

    # ------------------------------------------------------------------ plumbing

    @staticmethod
    def aiokafka() -> Any:
        return require("aiokafka", feature="Kafka job queue", extra="kafka")

    async def call(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One broker operation; its errors become JobError naming the operation and the topic."""
        errors = require("aiokafka.errors", feature="Kafka job queue", extra="kafka")
        return await broker_call(f"kafka {what}", fn, where=f"topic {self.config.topic!r}", errors=(errors.KafkaError,))

    async def ensure_topics(self) -> None:
        """Create the job topic (``partitions``) and its side topics if missing."""
        if self._topics_ready:
            return
        admin_mod = require("aiokafka.admin", feature="Kafka job queue", extra="kafka")
        c = self.config
        # replication -1 asks for the broker's default (aiokafka wants an empty assignment with it)
        replicas: dict[int, list[int]] | None = {} if c.replication == -1 else None
        wanted = [admin_mod.NewTopic(name, n, c.replication, replicas, configs) for name, n, configs in (
            (c.topic, c.partitions, None), (c.dlq, 1, None), (c.retries, 1, None),
            (c.workers, 1, {"cleanup.policy": "compact"}))]

        async def create() -> None:
            admin = admin_mod.AIOKafkaAdminClient(bootstrap_servers=c.servers)
            await admin.start()
            try:
                reply = await admin.create_topics(wanted)
            finally:
                await admin.close()
            for err in reply.topic_errors:
                name, code = err[0], err[1]
                if code not in (0, _TOPIC_EXISTS):
                    raise JobError(f"kafka cannot create topic {name!r}: error {code} {err[2] if len(err) > 2 else ''}")
        await self.call("create topics", create)
        self._topics_ready = True

    async def started(self, what: str, client: Any) -> Any:
        """``client`` (an aiokafka producer or consumer) started, or stopped again if it cannot start."""
        try:
            await self.call(what, client.start)
        except BaseException:
            await client.stop()
            raise
        return client

    async def producer(self) -> Any:
        async with self._lock:
            if self._producer is None:
                self._producer = await self.started("connect producer", self.aiokafka().AIOKafkaProducer(
                    bootstrap_servers=self.config.servers, acks="all", max_batch_size=self.config.batch_bytes))
            return self._producer

    async def _inspect(self) -> Any:
        """A consumer in the group that never subscribes: it reads offsets and side topics."""
        async with self._lock:
            if self._inspector is None:
                self._inspector = await self.started("connect consumer", self.aiokafka().AIOKafkaConsumer(
                    bootstrap_servers=self.config.servers, group_id=self.config.group, enable_auto_commit=False))
            return self._inspector

    async def aclose(self) -> None:
        clients = [c for c in (self._producer, self._inspector) if c is not None]
        self._producer = self._inspector = None
        try:
            for client in clients[:1]:
                await client.stop()
        finally:
            for client in clients[1:]:
                await client.stop()

    # ------------------------------------------------------------------ producer

    async def submit(self, jobs: Iterable[Job]) -> list[str]:
        """One message per job, keyed by its URI; returns ``topic/partition/offset`` ids."""
        batch = [(job.uri.encode(), job.to_json().encode()) for job in jobs]
        for key, value in batch:
            if len(value) > MAX_PAYLOAD_BYTES:
                raise JobError(f"job payload for {key.decode()!r} is {len(value)} bytes (limit "
                               f"{MAX_PAYLOAD_BYTES}): a job names a file, it does not carry it")
        await self.ensure_topics()
        if not batch:
            return []
        return await self.produce(self.config.topic, batch)

    async def produce(self, topic: str, messages: Sequence[tuple[bytes | None, bytes | None]]) -> list[str]:
        """Send and wait for every broker acknowledgement (acks=all)."""
        producer = await self.producer()

        async def send() -> list[str]:
            futures = [await producer.send(topic, value=value, key=key) for key, value in messages]
            done = [await f for f in futures]
            return [f"{m.topic}/{m.partition}/{m.offset}" for m in done]
        return await self.call("produce", send)

    # ------------------------------------------------------------------ observers

    async def lag(self) -> dict[int, int]:
        """Per partition of the job topic: messages the group has not committed yet (waiting or in flight)."""
        return {p: end - done for p, (done, end) in (await self._offsets()).items()}

    async def _existing(self) -> None:
        """Observers do not create the queue (a mistyped topic would appear): it must be there."""
        if self._topics_ready:
            return
        consumer = await self._inspect()
        if self.config.topic not in await self.call("list topics", consumer.topics):
            raise JobError(f"no topic {self.config.topic!r} on {self.config.servers} (nothing submitted yet?)")
        await self.ensure_topics()  # its side topics, if some tool made the topic alone

    async def _offsets(self) -> dict[int, tuple[int, int]]:
        """Per partition: (the group's committed offset, or the log start if none; the end offset)."""
        await self._existing()
        consumer = await self._inspect()
        tps = await self._partitions(self.config.topic)

        async def read() -> dict[int, tuple[int, int]]:
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            out = {}
            for tp in tps:
                committed = await consumer.committed(tp)
                out[tp.partition] = (starts[tp] if committed is None else committed, ends[tp])
            return out
        return await self.call("read offsets", read)

    async def _partitions(self, topic: str) -> list[Any]:
        producer = await self.producer()  # partitions_for waits for the topic's metadata
        parts = await self.call("metadata", lambda: producer.partitions_for(topic))
        return [self.aiokafka().TopicPartition(topic, p) for p in sorted(parts)]

    async def _size(self, topic: str) -> int:
        """Messages ever produced to ``topic`` (its end offsets: retention does not lower them)."""
        consumer = await self._inspect()
        tps = await self._partitions(topic)
        ends = await self.call("end offsets", lambda: consumer.end_offsets(tps))
        return sum(ends[tp] for tp in tps)

    async def read_all(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        """Every (key, value) still in a single-partition side topic, oldest first."""
        await self._existing()
        kafka = self.aiokafka()
        reader = kafka.AIOKafkaConsumer(bootstrap_servers=self.config.servers, enable_auto_commit=False,
                                        auto_offset_reset="earliest")

        async def read() -> list[tuple[bytes | None, bytes | None]]:
            await reader.start()
            try:
                tps = await self._partitions(topic)
                reader.assign(tps)
                ends = await reader.end_offsets(tps)
                await reader.seek_to_beginning(*tps)
                out: list[tuple[Any, Any, Any]] = []
                while [tp for tp in tps if await reader.position(tp) < ends[tp]]:
                    batch = await reader.getmany(timeout_ms=500)
                    out.extend((m.offset, m.key, m.value) for msgs in batch.values() for m in msgs
                               if m.offset < ends[kafka.TopicPartition(m.topic, m.partition)])
                return [(k, v) for _, k, v in sorted(out, key=lambda r: r[0])]
            finally:
                await reader.stop()
        return await self.call(f"read {topic}", read)

    async def workers(self) -> dict[str, dict[str, Any]]:
        """The live workers' latest reports: consumer name → {in_flight, partitions, at}."""
        latest: dict[str, dict[str, Any] | None] = {}
        for key, value in await self.read_all(self.config.workers):
            if key is not None:
                latest[key.decode()] = json.loads(value) if value else None
        expired = time.time() - self.config.session_timeout_s
        return {k: v for k, v in latest.items() if v is not None and v.get("at", 0) >= expired}

    async def stats(self) -> QueueStats:
        c = self.config
        offsets = await self._offsets()
        lag = sum(end - done for done, end in offsets.values())
        retried, dead = await self._size(c.retries), await self._size(c.dlq)
        live = await self.workers()
        in_flight = min(lag, sum(int(w.get("in_flight", 0)) for w in live.values()))
        finished = sum(done for done, _ in offsets.values())
        return QueueStats(queue=f"{c.topic} (group {c.group})", submitted=sum(e for _, e in offsets.values()) - retried,
                          waiting=lag - in_flight, in_flight=in_flight, done=max(0, finished - retried - dead),
                          retried=retried, dead=dead, consumers=len(live))

    async def dead_letters(self, count: int = 100) -> list[tuple[Job, str]]:
        out = []
        for _, value in (await self.read_all(self.config.dlq))[:count]:
            data = json.loads(value or b"{}")
            try:
                job = Job.from_json(data.get("job", ""))
            except JobError:
                job = Job(uri="", path="")
            out.append((job, str(data.get("reason", ""))))
        return out

    def source(self, *, concurrency: int = 4, idle_exit: float | None = None,
               consumer: str | None = None) -> KafkaJobStream:
        return KafkaJobStream(self, StreamOptions(concurrency, idle_exit, consumer))


__all__ = ["MAX_PAYLOAD_BYTES", "KafkaJobStream", "KafkaQueueConfig", "KafkaTransport", "PartitionOffsets", "parse_url"]
