"""The Redis Streams transport on its own: a test plays the pipeline (iterates, then calls back)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from fanrag.ingest.sources import SourceFile
from fanrag.jobs import jobs_for, open_transport
from fanrag.jobs.redis_streams import RedisJobStream, RedisStreamsTransport
from tests.servers.redis import start_redis

from .conftest import write_docs
from .helpers import assert_async_only, consume, take


def _transport(url: str) -> RedisStreamsTransport:
    t = open_transport(url)
    assert isinstance(t, RedisStreamsTransport)
    return t


async def _abandon(stream: RedisJobStream, n: int) -> list[SourceFile]:
    """Take ``n`` jobs and "die": no acknowledgement, no more heartbeats."""
    got = await take(stream, n)
    await stream.aclose()
    return got


def test_submitted_jobs_are_acked_only_when_committed(tmp_path: Path, queue_url: str) -> None:
    async def main() -> None:
        t = _transport(queue_url)
        ids = await t.submit(jobs_for(write_docs(tmp_path, 3)))
        assert len(ids) == 3
        stream = t.source(concurrency=3, idle_exit=None)
        got = await take(stream, 3)
        assert sorted(Path(s.path).name for s in got) == ["doc00.md", "doc01.md", "doc02.md"]
        assert all(s.size > 0 and s.token for s in got)
        before = await t.stats()
        assert (before.submitted, before.waiting, before.in_flight, before.done) == (3, 0, 3, 0)
        for s in got:
            stream.committed(s)
        await stream.aclose()
        after = await t.stats()
        assert (after.in_flight, after.done, after.dead) == (0, 3, 0)
        await t.aclose()
    asyncio.run(main())


def test_failures_retry_with_more_attempts_then_go_to_the_dlq(tmp_path: Path, queue_url: str) -> None:
    async def main() -> None:
        t = _transport(queue_url)
        await t.submit(jobs_for(write_docs(tmp_path, 2)))
        seen = await consume(t.source(concurrency=2, idle_exit=0.1), {"doc01.md": "doc01.md: corrupt"})
        names = [Path(s.path).name for s in seen]
        assert names.count("doc00.md") == 1
        assert names.count("doc01.md") == 3  # max_attempts=3 in the test URL
        stats = await t.stats()
        assert (stats.done, stats.retried, stats.dead, stats.in_flight, stats.waiting) == (1, 2, 1, 0, 0)
        [(job, reason)] = await t.dead_letters()
        assert Path(job.path).name == "doc01.md" and job.attempts == 2 and reason == "doc01.md: corrupt"
        await t.aclose()
    asyncio.run(main())


def test_a_dead_consumers_jobs_are_reclaimed_by_another(tmp_path: Path, queue_url: str) -> None:
    async def main() -> None:
        t = _transport(queue_url)
        await t.submit(jobs_for(write_docs(tmp_path, 3)))
        dead = t.source(concurrency=2, idle_exit=None, consumer="dead")
        taken = await _abandon(dead, 2)
        assert (await t.stats()).in_flight == 2
        survivor = t.source(concurrency=2, idle_exit=0.1, consumer="survivor")
        seen = await consume(survivor, {})  # idle_exit waits until the group has nothing pending
        assert sorted(s.uri for s in seen) == sorted({s.uri for s in taken} | {j.uri for j in jobs_for([tmp_path])})
        stats = await t.stats()
        assert (stats.done, stats.in_flight, stats.waiting) == (3, 0, 0)
        await t.aclose()
    asyncio.run(main())


def test_the_same_file_submitted_again_while_in_flight_runs_once(tmp_path: Path, queue_url: str) -> None:
    async def main() -> None:
        t = _transport(queue_url)
        [job] = jobs_for(write_docs(tmp_path, 1))
        await t.submit([job])
        stream = t.source(concurrency=4, idle_exit=0.1)
        jobs = stream.__aiter__()
        first = await anext(jobs)
        await t.submit([job])  # again, while the first run is in flight
        rest = asyncio.ensure_future(anext(jobs))
        while (await t.stats()).waiting:  # until the worker has taken the duplicate
            await asyncio.sleep(0.02)
        stream.committed(first)
        with pytest.raises(StopAsyncIteration):  # nothing more to run: the duplicate rode along
            await rest
        await stream.aclose()
        stats = await t.stats()
        assert (stats.done, stats.in_flight) == (2, 0)  # both entries acknowledged with the one run
        await t.aclose()
    asyncio.run(main())


def test_stop_leaves_unfinished_jobs_pending_for_reclaim(tmp_path: Path, queue_url: str) -> None:
    async def main() -> None:
        t = _transport(queue_url)
        await t.submit(jobs_for(write_docs(tmp_path, 2)))
        stream = t.source(concurrency=1, idle_exit=None)
        got = []
        async for src in stream:
            got.append(src)
            stream.stop()  # SIGTERM: no more reads; the job in hand is not acknowledged by stopping
        assert len(got) == 1
        stats = await t.stats()
        assert (stats.in_flight, stats.waiting, stats.done) == (1, 1, 0)
        stream.committed(got[0])  # it finishes after the stop: acknowledged on commit
        await stream.aclose()
        assert (await t.stats()).done == 1
        await t.aclose()
    asyncio.run(main())


def test_sync_iteration_is_refused(queue_url: str) -> None:
    assert_async_only(_transport(queue_url).source())


def test_a_job_whose_workers_keep_dying_goes_to_the_dlq(tmp_path: Path, redis_server: str) -> None:
    url = f"{redis_server}?stream=t-{uuid.uuid4().hex[:10]}&max_attempts=3&reclaim_idle=0.05&block=0.05"

    async def main() -> None:
        t = _transport(url)
        await t.submit(jobs_for(write_docs(tmp_path, 1)))
        for name in ("w1", "w2", "w3"):  # each takes the job (read, then reclaimed) and "dies" on it
            assert len(await _abandon(t.source(concurrency=1, consumer=name), 1)) == 1
        assert await consume(t.source(concurrency=1, idle_exit=0.1, consumer="w4"), {}) == []
        [(job, reason)] = await t.dead_letters()
        assert Path(job.path).name == "doc00.md" and "abandoned 3 times" in reason
        stats = await t.stats()
        assert (stats.dead, stats.in_flight, stats.done) == (1, 0, 0)
        await t.aclose()
    asyncio.run(main())


def test_an_acknowledgement_waits_out_a_redis_restart(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis")  # append-only file: the stream survives the restart
    try:
        async def main() -> None:
            t = _transport(f"{server.url}?stream=s&block=0.1")
            await t.submit(jobs_for(write_docs(tmp_path / "docs", 1)))
            stream = t.source(concurrency=1)
            [src] = await take(stream, 1)
            server.stop()
            stream.committed(src)  # the XACK fails, backs off and retries meanwhile
            await asyncio.to_thread(server.start)
            await stream.aclose()
            assert stream.errors == []
            stats = await t.stats()
            assert (stats.done, stats.in_flight) == (1, 0)
            await t.aclose()
        asyncio.run(main())
    finally:
        server.stop()


def test_a_live_consumers_long_job_is_not_reclaimed(tmp_path: Path, redis_server: str) -> None:
    url = f"{redis_server}?stream=t-{uuid.uuid4().hex[:10]}&reclaim_idle=1.5"

    async def main() -> None:
        t = _transport(url)
        await t.submit(jobs_for(write_docs(tmp_path, 1)))
        busy = t.source(concurrency=1, consumer="busy")
        [src] = await take(busy, 1)
        await asyncio.sleep(3.0)  # twice the reclaim time: only the heartbeat keeps the job fresh
        assert (await t.reclaim("other", 10, "0-0"))[1] == []
        busy.committed(src)
        await busy.aclose()
        assert (await t.stats()).done == 1
        await t.aclose()
    asyncio.run(main())


def test_acknowledged_entries_are_trimmed_and_the_counts_stay(tmp_path: Path, queue_url: str) -> None:
    async def main() -> None:
        t = _transport(queue_url)
        await t.submit(jobs_for(write_docs(tmp_path, 3)))
        stream = t.source(concurrency=3)
        got = sorted(await take(stream, 3), key=lambda s: s.path)  # doc00 has the lowest entry id
        for src in got[:2]:
            stream.committed(src)
        while stream._tasks:  # the acknowledgements land
            await asyncio.gather(*stream._tasks)
        assert await t.trim() == 2  # doc02 is still pending: its entry stays
        assert await t.redis.xlen(t.config.stream) == 1
        stream.committed(got[2])
        await stream.aclose()  # closing trims what its acknowledgements freed
        assert await t.redis.xlen(t.config.stream) == 0
        stats = await t.stats()
        assert (stats.submitted, stats.done, stats.in_flight, stats.waiting) == (3, 3, 0, 0)
        await t.aclose()
    asyncio.run(main())


def test_entries_another_group_has_not_read_are_not_trimmed(tmp_path: Path, queue_url: str) -> None:
    async def main() -> None:
        t = _transport(queue_url)
        await t.submit(jobs_for(write_docs(tmp_path, 2)))
        await t.redis.xgroup_create(t.config.stream, "audit", id="0")  # another consumer of the same stream
        assert len(await consume(t.source(concurrency=2, idle_exit=0.1), {})) == 2
        assert await t.trim() == 0
        assert await t.redis.xlen(t.config.stream) == 2
        await t.aclose()
    asyncio.run(main())
