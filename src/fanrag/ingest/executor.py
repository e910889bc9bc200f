"""Executors decide where the pipeline's work runs; the pipeline decides what runs and in which order.

``map_cpu`` runs a picklable function (planning, load/chunk) somewhere else: a process pool here, Ray
tasks or Celery workers elsewhere. ``embed`` runs the embedder: a thread here (ONNX Runtime releases
the GIL), an actor pool on Ray. Everything else (queues, batching, multi-store writes, commit) is the
same code for every executor, which is why their outputs are identical.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from ..embed.base import Embedder
from ..errors import ConfigError

T = TypeVar("T")


class WorkerCrashed(RuntimeError):
    """A worker process died while running a job (e.g. a native crash inside a parser)."""


@runtime_checkable
class Executor(Protocol):
    name: str
    workers: int

    async def map_cpu(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


class LocalExecutor:
    """A process pool for CPU stages and the embedder in a thread, on this machine."""

    name = "local"

    def __init__(self, embedder: Embedder, workers: int) -> None:
        self.workers = workers
        self._embedder = embedder
        self._pool: ProcessPoolExecutor | None = None

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver, not fork: the parent runs ONNX Runtime and writer threads, which fork does not copy safely.
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(["fanrag.ingest.work"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=ctx)
        return self._pool

    async def map_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._get_pool(), partial(fn, *args))
        except BrokenProcessPool as exc:
            # One crashed worker breaks the whole pool: replace it so the remaining jobs still run.
            old, self._pool = self._pool, None
            if old is not None:
                old.shutdown(wait=False, cancel_futures=True)
            raise WorkerCrashed("a worker process crashed while processing this file") from exc

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self._embedder.embed, list(texts))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def create_executor(name: str, embedder: Embedder, workers: int) -> Executor:
    """Executors by name; optional ones are imported only when asked for."""
    if name == "local":
        return LocalExecutor(embedder, workers)
    raise ConfigError("pipeline.executor", f"unknown executor {name!r}; available: local")
