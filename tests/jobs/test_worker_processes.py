"""``fanrag submit / worker / jobs`` as separate processes: a pool, a kill -9, a SIGTERM.

Each worker process has its own index home (an embedded home allows one writer process), except when a
worker replaces a dead one on the same home.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from click.testing import CliRunner

from fanrag.cli import cli
from fanrag.jobs import jobs_for

from .conftest import committed_sources, write_docs
from .helpers import WAIT_S, cli_submit, finish_worker, freeze_holding_jobs, queue_stats, start_worker, until


def test_two_workers_split_the_jobs_and_each_file_is_ingested_once(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 8)
    cli_submit(queue_url, [tmp_path / "docs"])
    procs = [(start_worker(queue_url, tmp_path / f"home{i}", tmp_path / f"w{i}.log", "--concurrency", "2",
                            "--idle-exit", "0.5"), tmp_path / f"w{i}.log") for i in range(2)]
    summaries = [finish_worker(p, log) for p, log in procs]
    assert sum(s["ok"] for s in summaries) == 8
    union = committed_sources(tmp_path / "home0") + committed_sources(tmp_path / "home1")
    assert sorted(union) == sorted(j.uri for j in jobs_for(docs))  # all of them, none twice
    result = CliRunner().invoke(cli, ["jobs", "--queue", queue_url, "--json"])
    stats = json.loads(result.stdout)
    assert (stats["submitted"], stats["done"], stats["in_flight"], stats["waiting"]) == (8, 8, 0, 0)


def test_jobs_of_a_killed_worker_are_reclaimed_by_its_replacement(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 6)
    cli_submit(queue_url, docs)
    home = tmp_path / "home"
    victim = start_worker(queue_url, home, tmp_path / "victim.log", "--concurrency", "2")
    held = freeze_holding_jobs(victim, queue_url)
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its load/chunk process, mid-batch
    victim.wait(WAIT_S)
    assert held.in_flight > 0 and held.done < 6
    replacement = start_worker(queue_url, home, tmp_path / "replacement.log", "--idle-exit", "0.5")
    finish_worker(replacement, tmp_path / "replacement.log")
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))
    stats = queue_stats(queue_url)
    assert (stats.done, stats.in_flight, stats.waiting, stats.dead) == (6, 0, 0, 0)


def test_sigterm_finishes_the_jobs_in_flight_and_exits_0(tmp_path: Path, queue_url: str) -> None:
    docs = write_docs(tmp_path / "docs", 6)
    cli_submit(queue_url, docs)
    home = tmp_path / "home"
    proc = start_worker(queue_url, home, tmp_path / "w.log", "--concurrency", "2")
    until(lambda: queue_stats(queue_url).in_flight > 0, "the worker to take jobs")
    proc.send_signal(signal.SIGTERM)  # the worker process only, as a process manager does
    summary = finish_worker(proc, tmp_path / "w.log")
    stats = queue_stats(queue_url)
    assert stats.in_flight == 0  # what it had taken, it finished and acknowledged
    assert stats.done == summary["ok"] >= 1 and stats.done + stats.waiting == 6
    assert len(committed_sources(home)) == stats.done
    drain = start_worker(queue_url, home, tmp_path / "drain.log", "--idle-exit", "0.5")
    finish_worker(drain, tmp_path / "drain.log")
    assert committed_sources(home) == sorted(j.uri for j in jobs_for(docs))
    assert queue_stats(queue_url).done == 6
