"""Executors decide where the pipeline's work runs; the pipeline decides what runs and in which order.

``map_cpu`` runs a picklable function (planning, load/chunk) somewhere else: a process pool here, Ray
tasks elsewhere. ``embed`` runs the embedder: a thread here (ONNX Runtime releases the GIL), an actor
pool on Ray. Everything else (queues, batching, multi-store writes, commit) is the same code for every
executor, which is why their outputs are identical. (Vectors too, because an embedding does not depend
on its batch: fp32 by nature, int8 because it runs one input per forward pass by default; with
``embed.batch_size`` > 1 int8 vectors would vary with their batch-mates, up to ~0.02.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

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
