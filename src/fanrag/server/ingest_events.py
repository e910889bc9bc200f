"""Ingestion as it happens: the state behind ``GET /events/ingest`` and the web UI's ingest view.

Each ``POST /ingest`` opens a run (``IngestMonitor.run``) and hands its ``RunProgress`` to
``engine.aingest``: the pipeline's progress events (the ones the CLI draws, ``ingest.summary.Progress``)
update the run's counters, from the event loop's thread. What the view shows, per run:

    load_chunk   parts planned and not back yet (a part is a file, or a page range of a large one:
                 loading and chunking are one job in a worker process)
    queued       part results waiting for the embedder (the queue's depth when the last batch formed)
    embedding    chunks in batches sent to the embedder and not back yet
    writing      chunks embedded and not committed yet
    committed, unchanged, failed   documents; ``failures`` the latest with their reasons
    batches      the latest embedding batches: documents, chunks, seconds, chunks per second

A reader gets the whole state, then the whole state again after each change, at most every
``every_s``: a slow reader skips states, never makes the pipeline wait, and no queue of events grows
for it. Only ingests through this server are seen (``fanrag ingest`` in another process is not).
Names are the read API's (``SourceView``): no absolute server path; a name that is not valid UTF-8 is
rendered escaped when the state is sent (``http.json_bytes``).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .files import SourceView

KEEP_RUNS = 10
KEEP_BATCHES = 40
KEEP_FAILURES = 100


@dataclass
class RunState:
    """One ingest's counters (mutable: the pipeline's events add to them)."""

    id: int
    label: str
    status: str = "waiting"  # waiting (for the write lock), running, done, failed
    started: float = field(default_factory=time.time)
    finished: float = 0.0
    parts_planned: int = 0
    parts_done: int = 0
    pages: int = 0
    queued: int = 0
    batched_chunks: int = 0
    embedded_chunks: int = 0
    embed_s: float = 0.0
    committed_docs: int = 0
    committed_chunks: int = 0
    unchanged_docs: int = 0
    failed_docs: int = 0
    batches: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=KEEP_BATCHES))
    failures: deque[dict[str, str]] = field(default_factory=lambda: deque(maxlen=KEEP_FAILURES))
    summary: dict[str, Any] | None = None
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        running = self.status == "running"
        return {
            "id": self.id, "label": self.label, "status": self.status, "started": self.started,
            "finished": self.finished, "pages": self.pages,
            "parts": {"planned": self.parts_planned, "done": self.parts_done},
            "stages": {  # what is in each stage now; nothing is in flight once the run is over
                "load_chunk": max(0, self.parts_planned - self.parts_done) if running else 0,
                "queued": self.queued if running else 0,
                "embedding": max(0, self.batched_chunks - self.embedded_chunks) if running else 0,
                "writing": max(0, self.embedded_chunks - self.committed_chunks) if running else 0,
                "committed": self.committed_docs, "unchanged": self.unchanged_docs, "failed": self.failed_docs,
            },
            "chunks": {"embedded": self.embedded_chunks, "committed": self.committed_chunks},
            "embed": {"seconds": round(self.embed_s, 3),
                      "chunks_per_s": round(self.embedded_chunks / self.embed_s, 1) if self.embed_s else 0.0},
            "batches": list(self.batches), "failures": list(self.failures),
            "summary": self.summary, "error": self.error,
        }


class RunProgress:
    """The ``Progress`` of one run: each event updates its ``RunState`` and wakes the readers."""

    def __init__(self, state: RunState, monitor: IngestMonitor) -> None:
        self.state = state
        self._monitor = monitor

    def _changed(self) -> None:
        self._monitor.changed()

    def start(self) -> None:
        """The run holds the write lock: its events come now."""
        self.state.status = "running"
        self._changed()

    def finish(self, summary: dict[str, Any]) -> None:
        """The run is over: ``summary`` is the one ``POST /ingest`` returns, its names made the read API's."""
        view = self._monitor.view
        failed = [{"source": view.name(f["source"]), "reason": view.scrub(f["reason"])}
                  for f in summary.get("failed", [])]
        missing = [view.name(p) for p in summary.get("missing_paths", [])]
        self.state.summary = {**summary, "failed": failed, "missing_paths": missing}
        self.state.status, self.state.finished = "done", time.time()
        self._changed()

    def planned(self, parts: int) -> None:
        self.state.parts_planned += parts
        self._changed()

    def part_done(self, pages: int, failed: int) -> None:
        self.state.parts_done += 1
        self.state.pages += pages
        self._changed()

    def committed(self, docs: int, chunks: int) -> None:
        self.state.committed_docs += docs
        self.state.committed_chunks += chunks
        self._changed()

    def unchanged(self, docs: int) -> None:
        self.state.unchanged_docs += docs
        self._changed()

    def embedding(self, docs: int, chunks: int, queued: int) -> None:
        self.state.batched_chunks += chunks
        self.state.queued = queued
        self._changed()

    def embedded(self, docs: int, chunks: int, seconds: float) -> None:
        s = self.state
        s.embedded_chunks += chunks
        s.embed_s += seconds
        s.batches.append({"docs": docs, "chunks": chunks, "seconds": round(seconds, 4),
                          "chunks_per_s": round(chunks / seconds, 1) if seconds > 0 else 0.0})
        self._changed()

    def failed(self, source: str, reason: str) -> None:
        view = self._monitor.view
        self.state.failed_docs += 1
        self.state.failures.append({"source": view.name(source), "reason": view.scrub(reason)})
        self._changed()


class IngestMonitor:
    """The latest runs of this server (``KEEP_RUNS``), and the readers waiting for their next change."""

    def __init__(self, view: SourceView) -> None:
        self.view = view
        self._runs: deque[RunState] = deque(maxlen=KEEP_RUNS)
        self._next_id = 1
        self._wake = asyncio.Event()

    def changed(self) -> None:
        """Wake every reader once: each waits on the event that was current when it last read."""
        self._wake.set()
        self._wake = asyncio.Event()

    def snapshot(self) -> dict[str, Any]:
        """Every kept run, the newest first."""
        return {"runs": [r.to_dict() for r in reversed(self._runs)]}

    @contextmanager
    def run(self, label: str) -> Iterator[RunProgress]:
        """A run, waiting for the write lock until ``start``; an exception that leaves it fails it."""
        state = RunState(self._next_id, label)
        self._next_id += 1
        self._runs.append(state)
        self.changed()
        try:
            yield RunProgress(state, self)
        except BaseException as exc:
            state.status, state.finished = "failed", time.time()
            state.error = self.view.scrub(f"{type(exc).__name__}: {exc}".splitlines()[0])
            self.changed()
            raise

    async def states(self, every_s: float = 0.1, keepalive_s: float = 15.0) -> AsyncIterator[dict[str, Any] | None]:
        """The state now, then after each change (bursts coalesced over ``every_s``); None when nothing
        changed for ``keepalive_s`` (the caller sends a keep-alive). Ends when the reader goes away."""
        wake = self._wake
        yield self.snapshot()
        while True:
            try:
                await asyncio.wait_for(wake.wait(), keepalive_s)
            except TimeoutError:
                yield None
                continue
            await asyncio.sleep(every_s)
            wake = self._wake
            yield self.snapshot()
