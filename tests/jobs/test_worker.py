"""A worker in this process: the real ingestion pipeline over the Redis job stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fanrag.engine import Engine
from fanrag.jobs import jobs_for
from fanrag.jobs.worker import run_worker
from tests.conftest import make_settings

from .conftest import committed_sources, write_docs, write_poison
from .helpers import run_worker_once, submit_jobs


def test_one_worker_ingests_every_file_once_and_dead_letters_the_poison(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 4)
    poison = write_poison(tmp_path / "docs")
    asyncio.run(submit_jobs(queue_url, [*docs, poison]))
    summary, stats, dead = run_worker_once(tmp_path / "home", queue_url, concurrency=3)
    assert summary.ok == 4
    assert committed_sources(tmp_path / "home") == sorted(j.uri for j in jobs_for(docs))
    assert (stats.submitted, stats.done, stats.retried, stats.dead) == (5, 4, 2, 1)
    assert (stats.in_flight, stats.waiting) == (0, 0)
    [(job, reason)] = dead
    assert job.path == str(poison.resolve()) and job.attempts == 2 and "binary" in reason


def test_a_second_run_over_resubmitted_files_acks_them_unchanged(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 2)
    asyncio.run(submit_jobs(queue_url, docs))
    run_worker_once(tmp_path / "home", queue_url)
    asyncio.run(submit_jobs(queue_url, docs))
    summary, stats, _ = run_worker_once(tmp_path / "home", queue_url)
    assert (summary.ok, summary.unchanged) == (0, 2)
    assert (stats.done, stats.in_flight) == (4, 0)
    assert committed_sources(tmp_path / "home") == sorted(j.uri for j in jobs_for(docs))


def test_an_unreachable_broker_is_a_job_error_not_a_task_group_traceback(tmp_path: Path) -> None:
    from dataclasses import replace

    import pytest

    from fanrag.errors import JobError
    from fanrag.jobs.redis_streams import RedisStreamsTransport
    from fanrag.limits.backoff import RetryPolicy
    from tests.servers.redis import free_port

    cfg = RedisStreamsTransport.from_url(f"redis://127.0.0.1:{free_port()}/0").config
    transport = RedisStreamsTransport(replace(cfg, reconnect=RetryPolicy(max_retries=1, base_s=0.01)))

    async def main() -> None:
        with Engine.open(settings=make_settings(tmp_path / "home", pipeline={"workers": 1})) as engine:
            await run_worker(engine, transport, idle_exit=0.1, handle_signals=False)
    with pytest.raises(JobError, match="XGROUP CREATE"):
        asyncio.run(main())
