"""The Ray executor: load/chunk jobs run as Ray tasks, embedding runs on a pool of embedder actors.

    pipeline.executor = "ray"                  # RAY_ADDRESS if set, else a local Ray started for the run
    pipeline.executor = "ray:10.0.0.5:6379"    # an existing cluster, from one of its nodes
    pipeline.executor = "ray:auto"             # the cluster `ray start` started on this machine
    pipeline.executor = "ray://head:10001"     # Ray Client, from outside the cluster (pip install 'ray[client]')

Only where the work runs changes: the pipeline's queues, batching, writes and commits are the same code as
with the local executor, and each ``embed`` call goes whole to one actor. With several actors the embed
stage keeps one batch in flight per actor, so batches differ from a local run's; the stores still end up
identical because a vector does not depend on its batch (see executor.py). Every node runs the functions from its
own installed ``fanrag`` (no ``runtime_env`` is shipped), so install fanrag on every node of the cluster.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import numpy as np

from ...errors import EmbeddingError, FanragError, MissingExtraError, require
from .base import WorkerCrashed

if TYPE_CHECKING:
    from ...embed.base import Embedder
    from ...settings import EmbedSettings, Settings

T = TypeVar("T")

# Each actor's ONNX Runtime session gets this many intra-op threads (unless embed.threads sets it), and the
# default pool has one actor per this many cluster CPUs: together the actors can use every CPU while
# embedding, the slowest stage. Many 2-thread sessions spread over the nodes rather than one wide session:
# a session on one node cannot use the others' CPUs, and small models gain little past a few threads.
CPUS_PER_ACTOR = 2
TASK_RETRIES = 1  # a task whose worker or node died runs once more; a deterministic crash fails the file


class RayClientMissing(MissingExtraError):
    """``ray://`` addresses need Ray Client's packages, which the ``fanrag[ray]`` extra does not install."""

    def __init__(self) -> None:
        self.feature, self.extra = "Ray Client (ray:// addresses)", "ray"
        ImportError.__init__(self, "Ray Client (ray:// addresses) needs grpcio: pip install 'ray[client]' "
                                   "(or use ray:ADDRESS from a node of the cluster)")


def _call(fn: Callable[..., T], *args: Any) -> T:
    """The one remote task: any picklable function (planning, load/chunk of a part) with its arguments."""
    return fn(*args)


class EmbedActor:
    """Builds the embedder once from its settings, then embeds whole batches (Ray Data's callable-class style)."""

    def __init__(self, settings: EmbedSettings) -> None:
        from ...embed import create_embedder

        self._embedder = create_embedder(settings)
        self._calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self._calls += 1
        return self._embedder.embed(texts)

    def info(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "calls": self._calls, "embedder": self._embedder.name}


class RayExecutor:
    """Ray tasks for the CPU stages, a pool of :class:`EmbedActor` for embedding."""

    name = "ray"

    def __init__(self, embed: EmbedSettings, *, address: str = "", workers: int = 0, actors: int = 0,
                 local_cpus: int | None = None) -> None:
        """``address``: "" (RAY_ADDRESS, else a new local Ray with ``local_cpus`` CPUs), a cluster address
        or ``ray://HOST:PORT``; a Ray this process already initialised is used as it is. ``workers``: the
        pipeline keeps twice this many CPU jobs in flight (0 = the cluster's CPUs). ``actors``: embedder
        actors (0 = one per CPUS_PER_ACTOR cluster CPUs, at least one)."""
        ray = require("ray", feature="the Ray executor", extra="ray")
        self._ray = ray
        self._owns_ray = _connect(ray, address, local_cpus)
        self._actors: list[Any] = []
        try:
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            self.workers = workers or cpus
            n = actors or max(1, cpus // CPUS_PER_ACTOR)
            # Reserve at most half of the cluster's CPUs for the actors (1 each, less when they are many or
            # the cluster is small): load/chunk tasks must always find a CPU, or a run whose actors took
            # every CPU would wait forever for tasks Ray can never schedule.
            reserve = round(min(1.0, cpus / (2 * n)), 4)
            threads = embed.threads or CPUS_PER_ACTOR
            actor = ray.remote(EmbedActor).options(num_cpus=reserve, max_restarts=1, max_task_retries=1)
            self._actors = [actor.remote(dataclasses.replace(embed, threads=threads)) for _ in range(n)]
            self._busy = [0] * n  # calls in flight per actor
            self._next = 0  # round-robin start among equally busy actors
            self._task = ray.remote(_call).options(max_retries=TASK_RETRIES)
            ex = ray.exceptions
            self._crashes: tuple[type[BaseException], ...] = (
                ex.WorkerCrashedError, ex.OutOfMemoryError, ex.NodeDiedError, ex.LocalRayletDiedError)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder, address: str = "") -> RayExecutor:
        p = settings.pipeline
        return cls(settings.embed, address=address, workers=p.workers, actors=p.embed_actors,
                   local_cpus=p.workers or None)

    @property
    def actors(self) -> int:
        return len(self._actors)

    @property
    def embed_slots(self) -> int:
        return max(1, len(self._actors))

    async def map_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        ref = self._task.remote(fn, *args)
        try:
            return await ref
        except asyncio.CancelledError:
            self._ray.cancel(ref, force=True)
            raise
        except self._crashes as exc:
            raise WorkerCrashed(f"a Ray worker died while processing this file ({type(exc).__name__})") from exc
        except self._ray.exceptions.RayTaskError as exc:
            _reraise(exc)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        i = self._pick()
        self._busy[i] += 1
        try:
            vectors = await self._actors[i].embed.remote(list(texts))
        except self._ray.exceptions.RayTaskError as exc:
            _reraise(exc)
        except self._ray.exceptions.RayActorError as exc:
            raise EmbeddingError(f"embedder actor {i} died: {exc}") from exc
        finally:
            self._busy[i] -= 1
        # Arrays read from Ray's object store are read-only views of shared memory: own a copy.
        return vectors if vectors.flags.writeable else vectors.copy()

    def _pick(self) -> int:
        """The least busy actor; ties go round-robin, so one call at a time still rotates over the pool."""
        n = len(self._actors)
        i = min(((self._next + k) % n for k in range(n)), key=self._busy.__getitem__)
        self._next = (i + 1) % n
        return i

    def actor_info(self) -> list[dict[str, Any]]:
        """Per actor: its process id, the calls it served and its embedder's name."""
        return self._ray.get([a.info.remote() for a in self._actors])

    def close(self) -> None:
        if self._ray.is_initialized():  # (the application may have shut Ray down already)
            for actor in self._actors:
                self._ray.kill(actor)
        self._actors = []
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()  # stops the local Ray we started, or disconnects from the cluster
        self._owns_ray = False


def _connect(ray: Any, address: str, local_cpus: int | None) -> bool:
    """Connect this process to Ray; return whether it is this executor's connection to close."""
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401  # Ray Client's transport, not part of the plain ``ray`` package
        except ImportError as exc:
            raise RayClientMissing() from exc
    if ray.is_initialized():
        return False  # the application's own Ray session (or a test's): use it, leave it running
    if address:
        ray.init(address=address)  # "auto" joins the cluster `ray start` started on this machine
    elif os.environ.get("RAY_ADDRESS"):
        ray.init()  # Ray reads RAY_ADDRESS itself
    else:
        # "local": a new Ray for this run, even where `ray start` left a cluster that plain ray.init() would join.
        ray.init(address="local", num_cpus=local_cpus, include_dashboard=False)
    return True


def _reraise(exc: BaseException) -> NoReturn:
    """A fanrag error raised remotely comes back as itself, as from the local executor (Ray's wrapper, with
    the remote traceback, is its ``__cause__``); anything else keeps Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, FanragError):
        raise cause from exc
    raise exc
