"""The BullMQ transport: jobs a Node.js service adds (npm ``bullmq``, tests/jobs/node/producer.mjs) are
ingested by fanrag workers through the Python ``bullmq`` package, on the same Redis.

The Node tests need ``node`` and the producer's dependencies (``npm ci --prefix tests/jobs/node``, which
scripts/test.sh runs when npm is on PATH); without them they skip, saying which is missing.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.engine import Engine
from fanrag.errors import ConfigError, JobError
from fanrag.jobs import jobs_for, open_transport
from fanrag.jobs.bullmq import (
    BullMQTransport,
    job_from_data,
    parse_url,
    retry_delay_ms,
)
from fanrag.jobs.worker import run_worker
from fanrag.limits.backoff import RetryPolicy
from tests.conftest import make_settings

from .conftest import committed_sources, write_docs, write_poison
from .helpers import (
    WAIT_S,
    assert_async_only,
    finish_worker,
    freeze_holding_jobs,
    queue_stats,
    run_worker_once,
    start_worker,
    submit_jobs,
    take,
    until,
)

pytest.importorskip("bullmq", reason="BullMQ tests need: pip install 'fanrag[bullmq]'")

NODE_DIR = Path(__file__).parent / "node"
PRODUCER = NODE_DIR / "producer.mjs"
POLL_S = 0.05  # how often a test process looks at the queue while a worker runs


def _node_missing() -> str | None:
    if shutil.which("node") is None:
        return "Node.js is not installed (no `node` on PATH): the Node.js producer cannot run"
    if not (NODE_DIR / "node_modules" / "bullmq").is_dir():
        how = "npm ci --prefix tests/jobs/node" if shutil.which("npm") else "install npm, then npm ci --prefix tests/jobs/node"
        return f"the Node.js producer's dependencies are not installed: {how}"
    return None


needs_node = pytest.mark.skipif(_node_missing() is not None, reason=_node_missing() or "")


@pytest.fixture
def bull_url(redis_server: str) -> str:
    """A fresh queue; quick retries, and a short lock so a killed worker's jobs come back in seconds."""
    return (redis_server.replace("redis://", "bullmq://", 1) + f"?queue=t-{uuid.uuid4().hex[:10]}"
            "&max_attempts=3&retry_base=0.02&lock_duration=2&stalled_interval=0.5&block=0.2")


def _transport(url: str) -> BullMQTransport:
    t = open_transport(url)
    assert isinstance(t, BullMQTransport)
    return t


def _node_submit(url: str, paths: list[Path], *opts: str) -> list[str]:
    """Enqueue one job per file the way a Node.js service does, with its own job options."""
    cfg = parse_url(url)
    cmd = ["node", str(PRODUCER), "--redis", cfg.connection, "--queue", cfg.queue, "--prefix", cfg.prefix,
           *opts, *map(str, paths)]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout)["ids"])


# ---------------------------------------------------------------------- pure functions


def test_the_url_names_queue_prefix_and_timings() -> None:
    cfg = parse_url("bullmqs://:pw@h:6380/2?queue=q&prefix=p&max_attempts=4&retry_base=0.5&lock_duration=3"
                    "&stalled_interval=1&max_stalled=2&block=1&health_check_interval=5")
    assert cfg.connection == "rediss://:pw@h:6380/2?health_check_interval=5"
    assert (cfg.queue, cfg.prefix, cfg.max_attempts, cfg.retry.base_s) == ("q", "p", 4, 0.5)
    assert cfg.worker_options(3, "w")["lockDuration"] == 3000 and cfg.worker_options(3, "w")["maxStalledCount"] == 2
    assert cfg.job_options() == {"attempts": 4, "backoff": {"type": "exponential", "delay": 500, "jitter": 1}}
    with pytest.raises(ConfigError, match="max_attempts"):
        parse_url("bullmq://h/0?max_attempts=0")


def test_a_minimal_node_job_gets_the_uri_fanrag_would_give_it(tmp_path: Path) -> None:
    [doc] = write_docs(tmp_path, 1)
    [expected] = jobs_for([doc])
    assert job_from_data({"path": str(doc)}) == expected
    assert job_from_data({"path": str(doc), "options": {"password": "x"}}).options == {"password": "x"}
    for bad in ({"uri": "file:///x"}, ["a"], {"path": ""}, {"path": "a", "options": "x"}):
        with pytest.raises(JobError, match="malformed job data"):
            job_from_data(bad)


def test_retry_delays_follow_node_bullmq_jitter_included() -> None:
    fallback = RetryPolicy(base_s=1.0, cap_s=60.0)
    expo = {"type": "exponential", "delay": 100}
    assert [retry_delay_ms(expo, n, fallback) for n in (1, 2, 3)] == [100, 200, 400]
    assert retry_delay_ms({**expo, "jitter": 1}, 3, fallback, rng=lambda: 0.0) == 0  # full jitter: [0, 400)
    assert retry_delay_ms({**expo, "jitter": 1}, 3, fallback, rng=lambda: 0.999) == 399
    assert retry_delay_ms({**expo, "jitter": 0.5}, 3, fallback, rng=lambda: 0.0) == 200
    assert retry_delay_ms(250, 5, fallback) == 250 and retry_delay_ms(None, 1, fallback) == 0
    assert 0 <= retry_delay_ms({"type": "custom-in-node"}, 3, fallback) <= 4000  # fanrag's full jitter


def test_a_missing_bullmq_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanrag.errors import MissingExtraError

    monkeypatch.setitem(sys.modules, "bullmq", None)
    transport = _transport("bullmq://127.0.0.1:1/0")  # the URL alone needs no package
    with pytest.raises(MissingExtraError, match=r"fanrag\[bullmq\]"):
        transport.queue  # noqa: B018  (opening the queue is what needs the package)


# ---------------------------------------------------------------------- Node.js producer → fanrag worker


@needs_node
def test_node_jobs_are_ingested_once_and_a_poison_file_fails_after_its_attempts(tmp_path: Path,
                                                                                bull_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 4)
    poison = write_poison(tmp_path / "docs")
    ids = _node_submit(bull_url, [*docs, poison], "--attempts", "3", "--backoff-type", "exponential",
                       "--backoff-delay", "20")
    assert len(ids) == 5
    summary, stats, dead = run_worker_once(tmp_path / "home", bull_url, concurrency=3)
    assert summary.ok == 4
    assert committed_sources(tmp_path / "home") == sorted(j.uri for j in jobs_for(docs))  # each once
    assert (stats.submitted, stats.done, stats.retried, stats.dead) == (5, 4, 2, 1)
    assert (stats.in_flight, stats.waiting, stats.delayed) == (0, 0, 0)
    [(job, reason)] = dead
    assert job.path == str(poison.resolve()) and job.attempts == 2 and "binary" in reason


def test_job_data_without_a_path_fails_at_once_with_the_reason(tmp_path: Path, bull_url: str) -> None:
    async def main() -> None:
        t = _transport(bull_url)
        await t.queue.add("ingest", {"file": "x.md"}, {"attempts": 5})  # what a careless producer sends
        stream = t.source(concurrency=1, idle_exit=0.1)
        assert [s async for s in stream] == []
        await stream.aclose()
        [(job, reason)] = await t.dead_letters()
        assert "malformed job data" in reason and job.path == '{"file": "x.md"}'
        assert (await t.stats()).retried == 0
        await t.aclose()
    asyncio.run(main())


# ---------------------------------------------------------------------- fanrag submit → fanrag worker


def test_python_submitted_jobs_retry_with_full_jitter_and_fail_the_same_way(tmp_path: Path,
                                                                            bull_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 2)
    poison = write_poison(tmp_path / "docs")

    async def submit() -> None:
        t = _transport(bull_url)
        ids = await t.submit(jobs_for([*docs, poison]))
        first = await t.queue.getJob(ids[0])
        assert first.opts["attempts"] == 3 and first.opts["backoff"]["jitter"] == 1
        await t.aclose()
    asyncio.run(submit())
    summary, stats, dead = run_worker_once(tmp_path / "home", bull_url)
    assert summary.ok == 2
    assert committed_sources(tmp_path / "home") == sorted(j.uri for j in jobs_for(docs))
    assert (stats.submitted, stats.done, stats.retried, stats.dead, stats.in_flight) == (3, 2, 2, 1, 0)
    [(job, reason)] = dead
    assert job.path == str(poison.resolve()) and "binary" in reason


# ---------------------------------------------------------------------- the stream on its own


def test_a_job_completes_only_when_committed_and_stop_gives_back_the_rest(tmp_path: Path, bull_url: str) -> None:
    async def main() -> None:
        t = _transport(bull_url)
        await t.submit(jobs_for(write_docs(tmp_path, 3)))
        stream = t.source(concurrency=2)
        [src] = await take(stream, 1)
        assert src.size > 0 and src.token
        await asyncio.sleep(0.3)  # the worker holds a second job, queued for the pipeline
        held = await t.stats()
        assert (held.in_flight, held.waiting, held.done) == (2, 1, 0)
        stream.stop()  # SIGTERM: the queued job goes back; the one handed out waits for its outcome
        stream.committed(src)
        await stream.aclose()
        after = await t.stats()
        assert (after.in_flight, after.waiting, after.done, after.retried) == (0, 2, 1, 0)
        waiting = await t.queue.getJobs(["waiting", "delayed"])
        assert all(j.attemptsMade == 0 for j in waiting)  # giving back is not an attempt
        await t.aclose()
    asyncio.run(main())


def test_the_same_file_queued_twice_while_in_flight_runs_once(tmp_path: Path, bull_url: str) -> None:
    async def main() -> None:
        t = _transport(bull_url)
        [job] = jobs_for(write_docs(tmp_path, 1))
        await t.submit([job, job])
        stream = t.source(concurrency=2, idle_exit=0.1)
        jobs = stream.__aiter__()
        first = await anext(jobs)
        rest = asyncio.ensure_future(anext(jobs))
        # Until the worker holds the duplicate too (the broker's count moves first: its reply may not have
        # reached the stream yet, and a copy that arrives after the commit rightly runs again).
        while len(stream.held_refs()) < 2:
            await asyncio.sleep(0.02)
        stream.committed(first)
        with pytest.raises(StopAsyncIteration):  # nothing more to hand out: the duplicate rode along
            await rest
        await stream.aclose()
        stats = await t.stats()
        assert (stats.done, stats.in_flight) == (2, 0)
        await t.aclose()
    asyncio.run(main())


def test_a_live_workers_long_job_keeps_its_lock(tmp_path: Path, redis_server: str) -> None:
    url = (redis_server.replace("redis://", "bullmq://", 1) + f"?queue=t-{uuid.uuid4().hex[:10]}"
           "&lock_duration=0.6&stalled_interval=0.2&block=0.2")

    async def main() -> None:
        t = _transport(url)
        await t.submit(jobs_for(write_docs(tmp_path, 1)))
        busy = t.source(concurrency=1, consumer="busy")
        [src] = await take(busy, 1)
        thief = t.source(concurrency=1, consumer="thief")  # its stalled-job check runs all along
        stolen = asyncio.ensure_future(take(thief, 1))
        await asyncio.sleep(2.0)  # over three lock durations: only the renewals keep the job
        assert not stolen.done()
        stats = await t.stats()
        assert (stats.in_flight, stats.waiting, stats.consumers) == (1, 0, 2)
        busy.committed(src)
        await busy.aclose()
        thief.stop()
        assert await stolen == []
        await thief.aclose()
        assert (await t.stats()).done == 1
        await t.aclose()
    asyncio.run(main())


def test_an_unreachable_redis_is_a_job_error(tmp_path: Path) -> None:
    from dataclasses import replace

    from tests.servers.redis import free_port

    cfg = parse_url(f"bullmq://127.0.0.1:{free_port()}/0")
    transport = BullMQTransport(replace(cfg, reconnect=RetryPolicy(max_retries=1, base_s=0.01)))

    async def main() -> None:
        with Engine.open(settings=make_settings(tmp_path / "home", pipeline={"workers": 1})) as engine:
            await run_worker(engine, transport, idle_exit=0.1, handle_signals=False)
    with pytest.raises(JobError, match="PING"):
        asyncio.run(main())


def test_sync_iteration_is_refused(bull_url: str) -> None:
    assert_async_only(_transport(bull_url).source())


# ---------------------------------------------------------------------- a killed worker process


def test_jobs_of_a_killed_worker_are_taken_by_its_replacement(tmp_path: Path, bull_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 6)
    submitted = CliRunner().invoke(cli, ["submit", str(tmp_path / "docs"), "--queue", bull_url, "--json"])
    assert json.loads(submitted.stdout)["submitted"] == 6, submitted.output
    home = tmp_path / "home"
    victim = start_worker(bull_url, home, tmp_path / "victim.log", "--concurrency", "2")
    held = freeze_holding_jobs(victim, bull_url, interval=POLL_S)
    os.killpg(victim.pid, signal.SIGKILL)  # mid-batch, its locks still held
    victim.wait(WAIT_S)
    assert held.in_flight > 0 and held.done < 6
    replacement = start_worker(bull_url, home, tmp_path / "replacement.log", "--idle-exit", "0.5")
    rc = replacement.wait(WAIT_S)
    log: Any = (tmp_path / "replacement.log").read_text()
    assert rc == 0, log
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))  # every file, once
    result = CliRunner().invoke(cli, ["jobs", "--queue", bull_url, "--json", "--dead"])
    stats = json.loads(result.stdout)
    assert (stats["done"], stats["in_flight"], stats["waiting"], stats["dead"]) == (6, 0, 0, 0)
    assert stats["dead_letters"] == []


def test_sigterm_finishes_the_jobs_in_flight_and_exits_0(tmp_path: Path, bull_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 6)
    asyncio.run(submit_jobs(bull_url, docs))
    home = tmp_path / "home"
    proc = start_worker(bull_url, home, tmp_path / "w.log", "--concurrency", "2")
    until(lambda: queue_stats(bull_url).in_flight > 0, "the worker to take jobs", interval=POLL_S)
    proc.send_signal(signal.SIGTERM)  # the worker process only, as a process manager does
    summary = finish_worker(proc, tmp_path / "w.log")
    stats = queue_stats(bull_url)
    assert (stats.in_flight, stats.retried) == (0, 0)  # what it had taken, it finished or gave back
    assert stats.done == summary["ok"] >= 1 and stats.done + stats.waiting == 6
    assert len(committed_sources(home)) == stats.done
