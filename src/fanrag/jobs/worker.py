"""A queue worker: the ingestion pipeline over a transport's job stream, stopped cleanly by SIGTERM.

On SIGTERM/SIGINT the worker stops reading; the jobs it already took finish and are acknowledged when
committed (a second signal is not needed; a kill -9 leaves them pending for another worker to reclaim).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from ..engine import Engine
from ..errors import FanragError
from ..ingest.summary import IngestSummary
from .base import JobStream, JobTransport

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


async def run_worker(engine: Engine, transport: JobTransport, *, concurrency: int = 4,
                     idle_exit: float | None = None, consumer: str | None = None,
                     handle_signals: bool = True) -> IngestSummary:
    """Ingest jobs until stopped (a signal) or, with ``idle_exit``, until the queue stays drained that long."""
    stream = transport.source(concurrency=concurrency, idle_exit=idle_exit, consumer=consumer)
    with _stop_on_signals(stream, handle_signals):
        try:
            return await engine.aingest(stream)
        except BaseExceptionGroup as group:  # the pipeline's task groups wrap what failed
            error = _first_fanrag_error(group)
            if error is None:
                raise
            raise error from group
        finally:
            await stream.aclose()


def _first_fanrag_error(group: BaseExceptionGroup[BaseException]) -> FanragError | None:
    """The broker or store error behind a task group's failure, to report it as itself."""
    found: BaseException | None = group.subgroup(lambda e: isinstance(e, FanragError))
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if isinstance(found, FanragError) else None


@contextmanager
def _stop_on_signals(stream: JobStream, enabled: bool) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    if enabled:
        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, stream.stop)
    try:
        yield
    finally:
        if enabled:
            for sig in STOP_SIGNALS:
                loop.remove_signal_handler(sig)
