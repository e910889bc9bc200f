"""Executors decide where the pipeline's work runs; the pipeline decides what runs and in which order.

``map_cpu`` runs a picklable function (planning, load/chunk) somewhere else: a process pool here, Ray
tasks or Celery workers elsewhere. ``embed`` runs the embedder: a thread here (ONNX Runtime releases
the GIL), an actor pool on Ray. Everything else (queues, batching, multi-store writes, commit) is the
same code for every executor, which is why their outputs are identical. (Vectors too, because an embedding
does not depend on its batch: fp32 by nature, int8 because it runs one input per forward pass by default;
with ``embed.batch_size`` > 1 int8 vectors would vary with their batch-mates, up to ~0.02.)
"""

from __future__ import annotations

import asyncio
import importlib
import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from ..embed.base import Embedder
from ..errors import ConfigError

if TYPE_CHECKING:
    from ..settings import Settings

T = TypeVar("T")


class WorkerCrashed(RuntimeError):
    """A worker process died while running a job (e.g. a native crash inside a parser)."""


@runtime_checkable
class Executor(Protocol):
    name: str
    workers: int
    # Embed calls the pipeline keeps in flight at once: 1 where one embedder already uses every core
    # (local), the actor count where several embedders run side by side (Ray).
    embed_slots: int

    async def map_cpu(self, fn: Callable[..., T], *args: Any) -> T: ...

    async def embed(self, texts: Sequence[str]) -> np.ndarray: ...

    def close(self) -> None: ...


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


# Executor kinds by the part of ``pipeline.executor`` before the first ":"; each class is imported only when
# asked for and built by ``from_settings(settings, embedder, address)``.
EXECUTORS: dict[str, tuple[str, str]] = {
    "local": ("fanrag.ingest.executor", "LocalExecutor"),
    "ray": ("fanrag.ingest.ray_executor", "RayExecutor"),
}
_FORMS = "local, ray (RAY_ADDRESS or a local Ray), ray:ADDRESS, ray://HOST:PORT (Ray Client)"


def parse_executor(name: str) -> tuple[str, str]:
    """``"ray://head:10001"`` -> ("ray", "ray://head:10001"); ``"ray:10.0.0.5:6379"`` -> ("ray", "10.0.0.5:6379");
    ``"local"`` -> ("local", ""). A ``scheme://`` address stays whole: the backend needs its scheme."""
    kind, sep, rest = name.strip().partition(":")
    if not sep:
        return kind, ""
    return kind, name.strip() if rest.startswith("//") else rest


def create_executor(settings: Settings, embedder: Embedder) -> Executor:
    """The executor ``settings.pipeline.executor`` names; optional ones are imported only when asked for."""
    kind, address = parse_executor(settings.pipeline.executor)
    if kind not in EXECUTORS:
        raise ConfigError("pipeline.executor", f"unknown executor {settings.pipeline.executor!r}; available: {_FORMS}")
    module, cls = EXECUTORS[kind]
    return getattr(importlib.import_module(module), cls).from_settings(settings, embedder, address)
