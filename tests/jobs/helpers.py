"""Helpers the job-queue tests share, whatever the transport: play the pipeline in-process, poll with a
safety net, and drive ``fanrag submit`` / ``fanrag worker`` as the operator would."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterable, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.engine import Engine
from fanrag.ingest.sources import AsyncJobSource, JobSource, SourceFile, SyncJobSource, iterate_source
from fanrag.ingest.summary import IngestSummary
from fanrag.jobs import Job, JobStream, QueueStats, jobs_for, open_transport
from fanrag.jobs.worker import run_worker
from tests.conftest import make_settings

T = TypeVar("T")
WAIT_S = 180.0  # a safety net for a hung worker, not a speed requirement
Outcome = tuple[IngestSummary, QueueStats, list[tuple[Job, str]]]

# ---------------------------------------------------------------------- a stream in-process


async def take(stream: AsyncIterable[SourceFile], n: int) -> list[SourceFile]:
    """The first ``n`` jobs the stream hands out, then stop reading."""
    got: list[SourceFile] = []
    async for src in stream:
        got.append(src)
        if len(got) == n:
            break
    return got


async def consume(stream: JobStream, outcome: dict[str, str]) -> list[SourceFile]:
    """Play the pipeline: commit every job, or fail those named in ``outcome`` with that reason."""
    seen = []
    async for src in iterate_source(stream):  # as the pipeline walks any source
        seen.append(src)
        reason = outcome.get(Path(src.path).name)
        stream.failed(src, reason) if reason else stream.committed(src)
    await stream.aclose()
    return seen


def assert_async_only(stream: object) -> None:
    """A queue's stream is an async job source, and not a sync one: ``for`` over it is refused."""
    assert isinstance(stream, AsyncJobSource) and isinstance(stream, JobSource)
    assert not isinstance(stream, SyncJobSource)
    try:
        iter(stream)  # type: ignore[call-overload]
    except TypeError:
        return
    raise AssertionError(f"{type(stream).__name__} can be iterated synchronously")


# ---------------------------------------------------------------------- waiting


def until(cond: Callable[[], bool], what: str, *, interval: float = 0.02) -> None:
    """Poll ``cond`` every ``interval`` s until it holds; fail after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(interval)


async def eventually(cond: Callable[[], bool], what: str, *, interval: float = 0.02) -> None:
    """``until`` inside an event loop: sleeps without blocking it."""
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------- the queue, from the test process


def on_transport(url: str, call: Callable[[Any], Awaitable[T]]) -> T:
    """One call on a transport of its own, closed afterwards (the test process is not a worker)."""
    async def go() -> T:
        t = open_transport(url)
        try:
            return await call(t)
        finally:
            await t.aclose()
    return asyncio.run(go())


def queue_stats(url: str) -> QueueStats:
    return on_transport(url, lambda t: t.stats())


async def submit_jobs(url: str, paths: list[Path]) -> None:
    """Enqueue one job per file through the transport (no CLI)."""
    t = open_transport(url)
    await t.submit(jobs_for(paths))
    await t.aclose()


def cli_submit(url: str, paths: list[Path]) -> None:
    """``fanrag submit PATHS --queue URL --json``; checks it enqueued one job per file."""
    result = CliRunner().invoke(cli, ["submit", *map(str, paths), "--queue", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["submitted"] == len(jobs_for(paths))


def run_worker_once(home: Path, url: str, concurrency: int = 2) -> Outcome:
    """A worker in this process until the queue has been idle 0.2 s; then the queue's stats and DLQ."""
    async def main() -> Outcome:
        t = open_transport(url)
        with Engine.open(settings=make_settings(home, pipeline={"workers": 1})) as engine:
            summary = await run_worker(engine, t, idle_exit=0.2, handle_signals=False, concurrency=concurrency)
        stats, dead = await t.stats(), await t.dead_letters()
        await t.aclose()
        return summary, stats, dead
    return asyncio.run(main())


# ---------------------------------------------------------------------- fanrag worker processes


def start_worker(url: str, home: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    """``fanrag worker --json`` in a session of its own (so a signal can reach its children), output to ``log``."""
    cmd = [sys.executable, "-m", "fanrag.cli", "worker", "--queue", url, "--home", str(home), "--workers", "1",
           "--json", *extra]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish_worker(proc: subprocess.Popen[bytes], log: Path) -> dict:
    """Wait for the worker to exit 0; returns its JSON summary (the last line of ``log``)."""
    rc = proc.wait(WAIT_S)
    text = log.read_text()
    assert rc == 0, text
    return json.loads(text.strip().splitlines()[-1])


def _holds_jobs(stats: QueueStats) -> bool:
    return stats.in_flight > 0


def freeze_holding_jobs(proc: subprocess.Popen[bytes], url: str, *, when: Callable[[QueueStats], bool] = _holds_jobs,
                        interval: float = 0.02) -> QueueStats:
    """SIGSTOP the worker at a moment ``when`` holds (by default: it holds unacknowledged jobs); returns the
    queue as it froze."""
    while True:
        until(lambda: queue_stats(url).in_flight > 0 or proc.poll() is not None, "the worker to take jobs",
              interval=interval)
        assert proc.poll() is None, "the worker exited before it could be killed"
        os.killpg(proc.pid, signal.SIGSTOP)
        stats = queue_stats(url)
        if when(stats):
            return stats
        os.killpg(proc.pid, signal.SIGCONT)  # not that moment (e.g. it had just acknowledged all): try again
