"""``fanrag submit / worker / jobs`` as separate processes: a pool, a kill -9, a SIGTERM.

Each worker process has its own index home (an embedded home allows one writer process), except when a
worker replaces a dead one on the same home.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.jobs import QueueStats, jobs_for, open_transport

from .conftest import committed_sources, write_docs

WAIT_S = 180.0  # a safety net for a hung worker, not a speed requirement


def _worker(url: str, home: Path, log: Path, *extra: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "fanrag.cli", "worker", "--queue", url, "--home", str(home), "--workers", "1",
           "--json", *extra]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen[bytes], log: Path) -> dict:
    rc = proc.wait(WAIT_S)
    text = log.read_text()
    assert rc == 0, text
    return json.loads(text.strip().splitlines()[-1])


def _stats(url: str) -> QueueStats:
    async def get() -> QueueStats:
        t = open_transport(url)
        try:
            return await t.stats()
        finally:
            await t.aclose()
    return asyncio.run(get())


def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not cond():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.02)


def _submit(url: str, paths: list[Path]) -> None:
    result = CliRunner().invoke(cli, ["submit", *map(str, paths), "--queue", url, "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["submitted"] == len(jobs_for(paths))


def test_two_workers_split_the_jobs_and_each_file_is_ingested_once(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 8)
    _submit(queue_url, [tmp_path / "docs"])
    procs = [(_worker(queue_url, tmp_path / f"home{i}", tmp_path / f"w{i}.log", "--concurrency", "2",
                      "--idle-exit", "0.5"), tmp_path / f"w{i}.log") for i in range(2)]
    summaries = [_finish(p, log) for p, log in procs]
    assert sum(s["ok"] for s in summaries) == 8
    union = committed_sources(tmp_path / "home0") + committed_sources(tmp_path / "home1")
    assert sorted(union) == sorted(j.uri for j in jobs_for(docs))  # all of them, none twice
    result = CliRunner().invoke(cli, ["jobs", "--queue", queue_url, "--json"])
    stats = json.loads(result.stdout)
    assert (stats["submitted"], stats["done"], stats["in_flight"], stats["waiting"]) == (8, 8, 0, 0)


def test_jobs_of_a_killed_worker_are_reclaimed_by_its_replacement(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 6)
    _submit(queue_url, docs)
    home = tmp_path / "home"
    victim = _worker(queue_url, home, tmp_path / "victim.log", "--concurrency", "2")
    held = _freeze_holding_jobs(victim, queue_url)
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its load/chunk process, mid-batch
    victim.wait(WAIT_S)
    assert held.in_flight > 0 and held.done < 6
    replacement = _worker(queue_url, home, tmp_path / "replacement.log", "--idle-exit", "0.5")
    _finish(replacement, tmp_path / "replacement.log")
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))
    stats = _stats(queue_url)
    assert (stats.done, stats.in_flight, stats.waiting, stats.dead) == (6, 0, 0, 0)


def _freeze_holding_jobs(proc: subprocess.Popen[bytes], url: str) -> QueueStats:
    """SIGSTOP the worker at a moment it holds unacknowledged jobs; returns the queue as it froze."""
    while True:
        _until(lambda: _stats(url).in_flight > 0 or proc.poll() is not None, "the worker to take jobs")
        assert proc.poll() is None, "the worker exited before it could be killed"
        os.killpg(proc.pid, signal.SIGSTOP)
        stats = _stats(url)
        if stats.in_flight > 0:
            return stats
        os.killpg(proc.pid, signal.SIGCONT)  # it had just acknowledged everything it held: try again


def test_sigterm_finishes_the_jobs_in_flight_and_exits_0(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 6)
    _submit(queue_url, docs)
    home = tmp_path / "home"
    proc = _worker(queue_url, home, tmp_path / "w.log", "--concurrency", "2")
    _until(lambda: _stats(queue_url).in_flight > 0, "the worker to take jobs")
    proc.send_signal(signal.SIGTERM)  # the worker process only, as a process manager does
    summary = _finish(proc, tmp_path / "w.log")
    stats = _stats(queue_url)
    assert stats.in_flight == 0  # what it had taken, it finished and acknowledged
    assert stats.done == summary["ok"] >= 1 and stats.done + stats.waiting == 6
    assert len(committed_sources(home)) == stats.done
    drain = _worker(queue_url, home, tmp_path / "drain.log", "--idle-exit", "0.5")
    _finish(drain, tmp_path / "drain.log")
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))
    assert _stats(queue_url).done == 6
