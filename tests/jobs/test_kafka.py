"""The Kafka transport against a real Kafka-protocol broker (tansu, tests/servers/kafka.py).

In-process tests play the pipeline (iterate, then call back); process tests run ``fanrag worker``.
Each test has its own topic and group. Joining a group and every rebalance take the broker a few seconds.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.errors import ConfigError, JobError
from fanrag.jobs import Job, QueueStats, jobs_for, open_transport
from fanrag.jobs.kafka import MAX_PAYLOAD_BYTES, KafkaTransport, PartitionOffsets, parse_url
from fanrag.limits.backoff import RetryPolicy
from tests.servers.kafka import kafka_server  # noqa: F401  (the session-scoped fixture)

from .conftest import committed_sources, write_docs, write_poison
from .helpers import (
    WAIT_S,
    assert_async_only,
    cli_submit,
    consume,
    eventually,
    finish_worker,
    freeze_holding_jobs,
    on_transport,
    queue_stats,
    start_worker,
    take,
    until,
)

pytest.importorskip("aiokafka", reason="Kafka job-queue tests need: pip install 'fanrag[kafka]'")

POLL_S = 0.1  # each look at the queue from the test process is a fresh broker connection


@pytest.fixture
def kafka_url(kafka_server: str) -> str:  # noqa: F811
    """A fresh topic and group; quick retries, a short session so a killed worker's partitions move soon.
    ``batch_bytes=1``: one message per produce batch, since tansu 0.6 reports a partition's end offset as
    its last batch's first offset + 1 (the lag would be wrong after a batched submit)."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    return (f"kafka://{kafka_server}/{name}?group=g-{name}&partitions=4&max_attempts=3&retry_base=0.05"
            "&retry_cap=0.2&session_timeout=3&rebalance_timeout=20&poll=0.2&batch_bytes=1")


def _transport(url: str) -> KafkaTransport:
    t = open_transport(url)
    assert isinstance(t, KafkaTransport)
    return t


# ---------------------------------------------------------------------- units: no broker


def test_the_commit_point_is_the_highest_contiguous_finished_offset_plus_one() -> None:
    p = PartitionOffsets()
    assert p.commit_point() is None  # nothing handed out
    for offset in (5, 6, 7, 9):  # 8 is a gap in the log (e.g. a transaction marker): never handed out
        p.delivered(offset)
    p.finished(6)
    p.finished(7)
    assert p.commit_point() is None  # 5 still runs: committing 8 would lose it
    p.finished(5)
    assert p.commit_point() == 9  # 5, 6, 7 done; 9 still runs
    p.committed = 9
    assert p.commit_point() is None  # no progress since the last commit
    p.finished(9)
    assert p.commit_point() == 10
    p.finished(9)  # finishing twice (a duplicate riding along) changes nothing
    assert p.commit_point() == 10


@pytest.mark.parametrize(("url", "field"), [
    ("kafka:///", None), ("kafka://h:x/t", "h:x"), ("kafka://h:1,:2/t", ":2"), ("kafka://h:1/bad topic", "topic"),
    ("kafka://h:1/t?partitions=0", "partitions"), ("kafka://h:1/t?max_attempts=0", "max_attempts"),
    ("kafka://h:1/t?partitions=four", "partitions"), ("kafka://h:1/t?retry_base=2&retry_cap=1", "retry_cap"),
    ("kafka://h:1/t?session_timeout=0", "session_timeout"), ("kafka://h:1/t?stream=s", "unknown parameter"),
    ("kafka://h:1/t?group=", "group"), ("kafka://h:1/t?replication=0", "replication")])
def test_bad_urls_are_config_errors_naming_the_field(url: str, field: str | None) -> None:
    with pytest.raises(ConfigError) as err:
        open_transport(url)
    assert err.value.field == "jobs.queue"
    assert field is None or field in err.value.reason


def test_a_url_with_several_brokers_and_defaults() -> None:
    c = parse_url("kafka://k1:9093,k2/jobs")
    assert c.bootstrap == ("k1:9093", "k2:9092") and c.topic == "jobs" and c.group == "fanrag"
    assert (c.partitions, c.max_attempts, c.retry.base_s, c.retry.cap_s) == (4, 5, 1.0, 60.0)
    assert (c.dlq, c.retries, c.workers) == ("jobs.dlq", "jobs.retries", "jobs.workers")


def test_a_job_carrying_more_than_a_file_reference_is_refused() -> None:
    job = Job(uri="file://big", path="/big", options={"inline": "x" * MAX_PAYLOAD_BYTES})
    with pytest.raises(JobError, match="names a file"):
        asyncio.run(_transport("kafka://127.0.0.1:1/t").submit([job]))  # refused before connecting


def test_observing_a_queue_that_does_not_exist_does_not_create_it(kafka_url: str) -> None:
    result = CliRunner().invoke(cli, ["jobs", "--queue", kafka_url])
    assert result.exit_code == 1 and "nothing submitted yet" in result.output

    async def topics(t: KafkaTransport) -> set[str]:
        return set(await (await t._inspect()).topics())
    assert parse_url(kafka_url).topic not in on_transport(kafka_url, topics)


def test_sync_iteration_is_refused() -> None:
    assert_async_only(_transport("kafka://127.0.0.1:1/t").source())


# ---------------------------------------------------------------------- the transport in-process


def test_offsets_are_committed_only_after_the_store_commit(tmp_path: Path, kafka_url: str) -> None:
    async def main() -> None:
        t = _transport(kafka_url)
        jobs = jobs_for(write_docs(tmp_path, 6))
        ids = await t.submit(jobs)
        per_partition = {p: [i.split("/")[1] for i in ids].count(str(p)) for p in range(4)}
        assert await t.lag() == per_partition  # nobody consumed yet: everything is lag
        stream = t.source(concurrency=6, idle_exit=None, consumer="c1")
        got = await take(stream, 6)
        assert sorted(s.uri for s in got) == sorted(j.uri for j in jobs)
        assert all(s.size > 0 and s.token for s in got)
        before = await t.stats()
        assert (before.submitted, before.waiting + before.in_flight, before.done) == (6, 6, 0)
        assert await t.lag() == per_partition  # taken but not committed: still lag
        for s in got:
            stream.committed(s)
        await stream.aclose()
        after = await t.stats()
        assert (after.submitted, after.waiting, after.in_flight, after.done, after.dead) == (6, 0, 0, 6, 0)
        assert await t.lag() == {0: 0, 1: 0, 2: 0, 3: 0}
        await t.aclose()
    asyncio.run(main())


def test_the_same_file_submitted_again_while_in_flight_runs_once(tmp_path: Path, kafka_url: str) -> None:
    async def main() -> None:
        t = _transport(kafka_url)
        [job] = jobs_for(write_docs(tmp_path, 1))
        [first_id] = await t.submit([job])
        stream = t.source(concurrency=4, idle_exit=0.3)
        jobs = stream.__aiter__()
        first = await anext(jobs)
        [again_id] = await t.submit([job])  # again, while the first run is in flight
        assert first_id.split("/")[1] == again_id.split("/")[1]  # keyed by URI: the same partition
        rest = asyncio.ensure_future(anext(jobs))
        await eventually(lambda: len(stream._in_flight[job.uri].refs) == 2, "the duplicate to ride along")
        stream.committed(first)
        with pytest.raises(StopAsyncIteration):  # nothing more to run: the duplicate rode along
            await rest
        await stream.aclose()
        stats = await t.stats()
        assert (stats.submitted, stats.done, stats.waiting, stats.in_flight) == (2, 2, 0, 0)
        await t.aclose()
    asyncio.run(main())


def test_failures_retry_with_backoff_then_go_to_the_dlq(tmp_path: Path, kafka_url: str) -> None:
    async def main() -> None:
        t = _transport(kafka_url)
        await t.submit(jobs_for(write_docs(tmp_path, 2)))
        stream = t.source(concurrency=2, idle_exit=0.3)
        names: list[str] = []
        tried_at: list[float] = []  # when each attempt on doc01.md was handed out (and failed at once)
        async for src in stream:
            names.append(Path(src.path).name)
            if names[-1] == "doc01.md":
                tried_at.append(time.time())
                stream.failed(src, "doc01.md: corrupt")
            else:
                stream.committed(src)
        await stream.aclose()
        assert names.count("doc00.md") == 1
        assert names.count("doc01.md") == 3  # max_attempts=3 in the test URL
        stats = await t.stats()
        assert (stats.done, stats.retried, stats.dead, stats.in_flight, stats.waiting) == (1, 2, 1, 0, 0)
        [(job, reason)] = await t.dead_letters()
        assert Path(job.path).name == "doc01.md" and job.attempts == 2 and reason == "doc01.md: corrupt"
        retries = [json.loads(v) for _, v in await t.read_all(t.config.retries)]
        assert [r["attempts"] for r in retries] == [1, 2]
        for n, r in enumerate(retries):  # full jitter: a wait in [0, min(cap, base * 2**n)], then honoured
            assert tried_at[n] <= r["not_before"] <= tried_at[n] + min(0.2, 0.05 * 2**n) + 0.01
            assert tried_at[n + 1] >= r["not_before"]
        assert stream.errors == []
        await t.aclose()
    asyncio.run(main())


def test_a_malformed_payload_goes_straight_to_the_dlq(tmp_path: Path, kafka_url: str) -> None:
    async def main() -> None:
        t = _transport(kafka_url)
        await t.submit(jobs_for(write_docs(tmp_path, 1)))
        await t.produce(t.config.topic, [(b"junk", b"{not json")])
        seen = await consume(t.source(concurrency=2, idle_exit=0.3), {})
        assert [Path(s.path).name for s in seen] == ["doc00.md"]
        [(job, reason)] = await t.dead_letters()
        assert job.path == "" and "malformed job payload" in reason
        stats = await t.stats()
        assert (stats.done, stats.dead, stats.waiting, stats.in_flight) == (1, 1, 0, 0)
        await t.aclose()
    asyncio.run(main())


def test_stop_leaves_unfinished_jobs_uncommitted_and_commits_them_when_they_finish(
        tmp_path: Path, kafka_url: str) -> None:
    async def main() -> None:
        t = _transport(kafka_url.replace("partitions=4", "partitions=1"))
        await t.submit(jobs_for(write_docs(tmp_path, 3)))
        stream = t.source(concurrency=2, idle_exit=None)
        got = []
        async for src in stream:
            got.append(src)
            if len(got) == 2:
                stream.stop()  # SIGTERM: no more reads; the jobs in hand finish
        assert len(got) == 2
        assert await t.lag() == {0: 3}
        stream.committed(got[1])  # out of order: offset 1 cannot be committed before offset 0
        await asyncio.sleep(0)
        while stream._tasks:
            await asyncio.gather(*stream._tasks)
        assert await t.lag() == {0: 3}
        stream.committed(got[0])
        await stream.aclose()
        assert await t.lag() == {0: 1}
        stats = await t.stats()
        assert (stats.done, stats.waiting, stats.in_flight, stats.consumers) == (2, 1, 0, 0)
        await t.aclose()
    asyncio.run(main())


def test_a_rebalance_lets_jobs_in_flight_finish_and_commit_before_handing_over(
        tmp_path: Path, kafka_url: str) -> None:
    async def main() -> None:
        t = _transport(kafka_url)
        await t.submit(jobs_for(write_docs(tmp_path, 8)))
        first = t.source(concurrency=8, idle_exit=None, consumer="first")
        held = await take(first, 8)  # owns all four partitions, holds every job
        second = t.source(concurrency=8, idle_exit=0.3, consumer="second")
        joining = asyncio.ensure_future(consume(second, {}))
        # The second's join revokes the first's partitions; the first waits for its jobs before handing over.
        await eventually(lambda: bool(first._revoking), "the first worker to be asked for its partitions")
        assert (await t.stats()).done == 0
        for src in held:  # the pipeline finishes them: committed before the partitions move
            first.committed(src)
        assert await joining == []  # nothing left to run again on the new owner
        assert first.errors == []
        await first.aclose()
        stats = await t.stats()
        assert (stats.done, stats.waiting, stats.in_flight) == (8, 0, 0)
        await t.aclose()
    asyncio.run(main())


def test_a_retry_that_cannot_be_produced_runs_again_and_idle_exit_still_fires(
        tmp_path: Path, kafka_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        t = KafkaTransport(replace(parse_url(kafka_url), reconnect=RetryPolicy(max_retries=0)))
        [job] = jobs_for(write_docs(tmp_path, 1))
        await t.submit([job])
        produce, lost = t.produce, [t.config.topic]  # the first retry never reaches the broker

        async def flaky(topic: str, messages: Any) -> list[str]:
            if topic in lost:
                lost.remove(topic)
                raise JobError(f"kafka produce on topic {topic!r}: broker unavailable")
            return await produce(topic, messages)
        monkeypatch.setattr(t, "produce", flaky)
        stream = t.source(concurrency=1, idle_exit=0.3)
        seen: list[str] = []

        async def work() -> None:
            async for src in stream:
                seen.append(src.token)
                stream.failed(src, "doc00.md: flaky") if len(seen) == 1 else stream.committed(src)
        await asyncio.wait_for(work(), WAIT_S)  # the offset is fetched again: nothing stays pending
        await stream.aclose()
        assert seen[0] == seen[1] and len(seen) == 2  # the same message, delivered again
        assert len(stream.errors) == 1 and "broker unavailable" in stream.errors[0]
        stats = await t.stats()
        assert (stats.done, stats.retried, stats.dead, stats.waiting, stats.in_flight) == (1, 0, 0, 0, 0)
        await t.aclose()
    asyncio.run(main())


# ---------------------------------------------------------------------- fanrag worker processes


def _workers(url: str) -> dict[str, dict[str, Any]]:
    return on_transport(url, lambda t: t.workers())


def test_two_workers_split_the_partitions_and_each_file_is_ingested_once(tmp_path: Path, kafka_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 12)
    kafka_url = kafka_url.replace("session_timeout=3", "session_timeout=10")  # no rebalance on a busy machine
    on_transport(kafka_url, lambda t: t.ensure_topics())
    procs = [(start_worker(kafka_url, tmp_path / f"home{i}", tmp_path / f"w{i}.log", "--concurrency", "2"),
              tmp_path / f"w{i}.log") for i in range(2)]
    # Both in the group, each with its share of the partitions, before any job is there.
    until(lambda: sorted(len(w["partitions"]) for w in _workers(kafka_url).values()) == [2, 2],
          "both workers to own two partitions each", interval=POLL_S)
    owned = {int(name.split("-")[-2]): set(w["partitions"]) for name, w in _workers(kafka_url).items()}
    result = CliRunner().invoke(cli, ["submit", str(tmp_path / "docs"), "--queue", kafka_url, "--json"])
    partition_of = dict(zip([j.uri for j in jobs_for(docs)], [int(i.split("/")[1]) for i in json.loads(
        result.stdout)["ids"]], strict=True))
    until(lambda: queue_stats(kafka_url).done == 12, "all jobs done", interval=POLL_S)
    lag = CliRunner().invoke(cli, ["jobs", "--queue", kafka_url, "--json"])
    assert json.loads(lag.stdout)["lag_by_partition"] == {"0": 0, "1": 0, "2": 0, "3": 0}
    for p, _ in procs:
        p.send_signal(signal.SIGTERM)
    summaries = [finish_worker(p, log) for p, log in procs]
    assert sum(s["ok"] for s in summaries) == 12
    for i, (p, _) in enumerate(procs):  # each ingested the files of its own partitions, and only those
        mine = sorted(uri for uri, part in partition_of.items() if part in owned[p.pid])
        assert committed_sources(tmp_path / f"home{i}") == mine
    stats = queue_stats(kafka_url)
    assert (stats.submitted, stats.done, stats.in_flight, stats.waiting, stats.consumers) == (12, 12, 0, 0, 0)


def test_a_killed_workers_partitions_are_taken_over_by_its_replacement(tmp_path: Path, kafka_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 12)
    cli_submit(kafka_url, docs)
    home = tmp_path / "home"
    victim = start_worker(kafka_url, home, tmp_path / "victim.log", "--concurrency", "2")
    held = freeze_holding_jobs(victim, kafka_url, when=_some_committed, interval=POLL_S)
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its load/chunk process, mid-batch
    victim.wait(WAIT_S)
    assert held.in_flight > 0 and 1 <= held.done < 12
    replacement = start_worker(kafka_url, home, tmp_path / "replacement.log", "--idle-exit", "0.5")
    summary = finish_worker(replacement, tmp_path / "replacement.log")
    assert summary["ok"] + summary["unchanged_sources"] >= 12 - held.done  # the rest, and maybe some again
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))
    stats = queue_stats(kafka_url)
    assert (stats.done, stats.in_flight, stats.waiting, stats.dead) == (12, 0, 0, 0)


def _some_committed(stats: QueueStats) -> bool:
    """The moment to kill a worker: it holds uncommitted jobs, and has committed some but not all."""
    return stats.in_flight > 0 and 1 <= stats.done < stats.submitted


def test_sigterm_finishes_the_jobs_in_flight_and_exits_0(tmp_path: Path, kafka_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 8)
    cli_submit(kafka_url, docs)
    home = tmp_path / "home"
    proc = start_worker(kafka_url, home, tmp_path / "w.log", "--concurrency", "2")
    until(lambda: queue_stats(kafka_url).in_flight > 0, "the worker to take jobs", interval=POLL_S)
    proc.send_signal(signal.SIGTERM)  # the worker process only, as a process manager does
    summary = finish_worker(proc, tmp_path / "w.log")
    stats = queue_stats(kafka_url)
    assert stats.in_flight == 0 and stats.consumers == 0
    assert stats.done == summary["ok"] >= 1 and stats.done + stats.waiting == 8  # what it took, it committed
    assert len(committed_sources(home)) == stats.done
    drain = start_worker(kafka_url, home, tmp_path / "drain.log", "--idle-exit", "0.5")
    finish_worker(drain, tmp_path / "drain.log")
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))
    assert queue_stats(kafka_url).done == 8


def test_a_poison_file_reaches_the_dlq_after_max_attempts(tmp_path: Path, kafka_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 2)
    poison = write_poison(tmp_path / "docs")
    cli_submit(kafka_url, [*docs, poison])
    home = tmp_path / "home"
    finish_worker(start_worker(kafka_url, home, tmp_path / "w.log", "--idle-exit", "0.5"), tmp_path / "w.log")
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))
    text = CliRunner().invoke(cli, ["jobs", "--queue", kafka_url]).output
    assert "lag: p0=0, p1=0, p2=0, p3=0" in text
    result = CliRunner().invoke(cli, ["jobs", "--queue", kafka_url, "--dead", "--json"])
    out = json.loads(result.stdout)
    assert (out["done"], out["retried"], out["dead"], out["waiting"], out["in_flight"]) == (2, 2, 1, 0, 0)
    [dead] = out["dead_letters"]
    assert dead["path"] == str(poison.resolve()) and dead["attempts"] == 3
