"""An executor that runs the CPU jobs in this process (in threads), recording each: scheduling tests can
then see every job the pipeline made, and patch a loader or a worker function in place."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from fanrag.embed.base import Embedder
from fanrag.engine import Engine
from fanrag.ingest.pipeline import IngestPipeline
from fanrag.ingest.sources import JobSource
from fanrag.ingest.summary import IngestSummary

T = TypeVar("T")


class InlineExecutor:
    """``map_cpu`` in a thread of this process; ``jobs`` lists (function name, args) of every call.
    ``around`` may wrap each call: ``around(fn, args)`` returns what the call returns."""

    name = "inline"
    workers = 2
    embed_slots = 1

    def __init__(self, embedder: Embedder,
                 around: Callable[[Callable[..., Any], tuple[Any, ...]], Any] | None = None) -> None:
        self._embedder = embedder
        self._around = around or (lambda fn, args: fn(*args))
        self.jobs: list[tuple[str, tuple[Any, ...]]] = []

    async def map_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        self.jobs.append((fn.__name__, args))
        return await asyncio.to_thread(self._around, fn, args)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self._embedder.embed, list(texts))

    def close(self) -> None:
        pass


def run_inline(engine: Engine, source: JobSource, executor: InlineExecutor, *, prune: bool = False) -> IngestSummary:
    pipeline = IngestPipeline(engine.settings, engine.stores, engine.embedder, executor)
    return asyncio.run(pipeline.arun(source, prune=prune))
