"""``fanrag submit``, ``fanrag worker`` and ``fanrag jobs``: ingestion over a job queue."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import click

from .options import executor_option, home_option, json_option, pipeline_overrides

if TYPE_CHECKING:
    from ..engine import Engine
    from ..ingest.summary import IngestSummary
    from ..jobs import Job, QueueStats

queue_option = click.option("--queue", "queue", envvar="FANRAG_QUEUE", required=True,
                            help="Queue URL, e.g. redis://127.0.0.1:6379/0?stream=ingest-jobs ($FANRAG_QUEUE).")


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@queue_option
@click.option("--password", default=None, help="Password for encrypted PDFs (travels in the job).")
@json_option
def submit(paths: tuple[str, ...], queue: str, password: str | None, as_json: bool) -> None:
    """Queue one ingestion job per file (directories are expanded); workers read the files themselves."""
    from ..jobs import jobs_for

    jobs = jobs_for(paths, {"password": password} if password else None)
    ids = asyncio.run(_submit(queue, jobs))
    click.echo(json.dumps({"submitted": len(ids), "ids": ids}) if as_json else f"{len(ids)} jobs submitted")


async def _submit(queue: str, jobs: list[Job]) -> list[str]:
    from ..jobs import open_transport

    transport = open_transport(queue)
    try:
        return await transport.submit(jobs)
    finally:
        await transport.aclose()


@click.command()
@queue_option
@home_option
@click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
              help="Jobs in flight at once.")
@click.option("--idle-exit", type=click.FloatRange(min=0), default=None,
              help="Exit once the queue has been drained for this many seconds (default: run until SIGTERM).")
@click.option("--workers", type=int, default=None, help="Load/chunk processes (default: number of cores).")
@executor_option
@json_option
def worker(queue: str, home: str | None, concurrency: int, idle_exit: float | None, workers: int | None,
           executor: str | None, as_json: bool) -> None:
    """Ingest queued jobs into the index at --home. SIGTERM stops reading and lets jobs in flight finish."""
    from ..engine import Engine

    with Engine.open(home, overrides=pipeline_overrides(workers, executor)) as engine:
        summary = asyncio.run(_work(engine, queue, concurrency, idle_exit))
    if as_json:
        click.echo(json.dumps(summary.to_dict()))
    else:
        click.echo(f"{summary.ok} ingested, {summary.unchanged} unchanged, {len(summary.failed)} failed attempts "
                   f"from {summary.sources} jobs, {summary.chunks} chunks in {summary.wall_s:.1f} s")


async def _work(engine: Engine, queue: str, concurrency: int, idle_exit: float | None) -> IngestSummary:
    from ..jobs import open_transport
    from ..jobs.worker import run_worker

    transport = open_transport(queue)
    try:
        return await run_worker(engine, transport, concurrency=concurrency, idle_exit=idle_exit)
    finally:
        await transport.aclose()


@click.command()
@queue_option
@click.option("--dead", "show_dead", is_flag=True, help="Also list dead-lettered jobs with their reasons.")
@json_option
def jobs(queue: str, show_dead: bool, as_json: bool) -> None:
    """Show the queue: waiting (lag), in flight, done, retried, dead-lettered (and lag per partition)."""
    stats, lag, dead = asyncio.run(_stats(queue, show_dead))
    if as_json:
        out = stats.to_dict() | ({"lag_by_partition": {str(p): n for p, n in lag.items()}} if lag is not None else {})
        out |= ({"dead_letters": [{"path": j.path, "attempts": j.attempts + 1, "reason": r}
                                  for j, r in dead]} if show_dead else {})
        click.echo(json.dumps(out))
        return
    for key, value in stats.to_dict().items():
        click.echo(f"{key:>10}: {value}")
    if lag is not None:
        click.echo(f"{'lag':>10}: " + ", ".join(f"p{p}={n}" for p, n in sorted(lag.items())))
    for job, reason in dead:
        click.echo(f"DEAD {job.path}: {reason}", err=True)


async def _stats(queue: str, show_dead: bool) -> tuple[QueueStats, dict[int, int] | None, list[tuple[Job, str]]]:
    from ..jobs import PartitionedTransport, open_transport

    transport = open_transport(queue)
    try:
        lag = await transport.lag() if isinstance(transport, PartitionedTransport) else None
        return await transport.stats(), lag, (await transport.dead_letters() if show_dead else [])
    finally:
        await transport.aclose()
