"""The local executor: a process pool for the CPU stages, the embedder in a thread, on this machine."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ...embed.base import Embedder
from ...errors import ConfigError
from .base import WorkerCrashed

if TYPE_CHECKING:
    from ...settings import Settings

T = TypeVar("T")


class LocalExecutor:
    """A process pool for CPU stages and the embedder in a thread, on this machine."""

    name = "local"
    embed_slots = 1  # ONNX Runtime spreads one batch over all cores: a second call would only compete

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

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder, address: str = "") -> LocalExecutor:
        if address:
            raise ConfigError("pipeline.executor", f"the local executor takes no address (got {address!r})")
        return cls(embedder, settings.pipeline.workers or settings.cores)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
