"""The local executor: a process pool for the CPU stages, the embedder in a thread, on this machine.

Two ways a worker process can go wrong, and what happens:

* **A worker crashes** (a native crash in a parser, ``os._exit``): ProcessPoolExecutor then fails every
  job in flight on that pool, not only the one that crashed it. Each of them runs again, alone, in a
  one-process pool, one at a time: an innocent job succeeds there, and the job that crashes again is
  the culprit (WorkerCrashed: its file fails, nothing else). The broken pool is replaced once: each job
  remembers the pool it ran on and retires only that one, so the handler of a job that learns of a
  crash late cannot shut down the pool that replaced it.
* **This process dies** (SIGKILL): the workers must not live on. Their parent is not this process but
  the forkserver, and the forkserver does not die with it: it exits only when every holder of its
  "alive" pipe has, and each worker holds one. So neither PR_SET_PDEATHSIG nor polling ``getppid()``
  in a worker would ever fire (both watch the forkserver). Instead each worker watches its owner through
  a pipe whose only writing end is held here, and which reaches EOF the moment this process is gone,
  however it died. The kernel itself ends the worker then: the worker opens the pipe's reading end
  anew (an open file description of its own) with O_ASYNC and itself as owner, so EOF sends it SIGIO,
  whose default action terminates it, even while a parser holds the GIL in C for minutes (a thread
  would wait for the GIL). A thread blocked on the pipe is the fallback where /proc is missing, and
  catches an owner that died before the worker started. The forkserver (this run's or an earlier
  run's: each executor has its own lifeline) and the resource tracker then exit on their own, as their
  last clients are gone.
"""

from __future__ import annotations

import asyncio
import fcntl
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from multiprocessing.connection import Connection
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
        self.generation = 0  # pools replaced after a crash
        self._embedder = embedder
        self._pool: ProcessPoolExecutor | None = None
        self._alone: ProcessPoolExecutor | None = None  # one process: jobs whose pool broke under them
        self._alone_lock = asyncio.Lock()
        self._lifeline: tuple[Connection, Connection] | None = None  # (read, write); workers exit at its EOF

    async def map_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        call = partial(fn, *args)
        pool = self._shared_pool()
        try:
            return await _run(pool, call)
        except BrokenProcessPool:
            self._retire(pool)
        return await self._run_alone(call)

    async def _run_alone(self, call: Callable[[], T]) -> T:
        """A job whose pool broke: run it again with nothing else in flight, so a crash now is its own."""
        async with self._alone_lock:
            pool = self._alone = self._alone or self._new_pool(1)
            try:
                return await _run(pool, call)
            except BrokenProcessPool as exc:
                self._alone = None
                pool.shutdown(wait=False)
                raise WorkerCrashed("a worker process crashed while processing this file") from exc

    def _shared_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = self._new_pool(self.workers)
        return self._pool

    def _retire(self, pool: ProcessPoolExecutor) -> None:
        """Replace ``pool`` after it broke, unless an earlier job of the same pool already did."""
        if self._pool is pool:
            self._pool = None
            self.generation += 1
        pool.shutdown(wait=False)  # (its processes are gone or being terminated; again is harmless)

    def _new_pool(self, workers: int) -> ProcessPoolExecutor:
        # forkserver, not fork: the parent runs ONNX Runtime and writer threads, which fork does not copy safely.
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["fanrag.ingest.work"])
        if self._lifeline is None:
            self._lifeline = ctx.Pipe(duplex=False)
        return ProcessPoolExecutor(workers, mp_context=ctx, initializer=exit_with_owner,
                                   initargs=(self._lifeline[0],))

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self._embedder.embed, list(texts))

    @classmethod
    def from_settings(cls, settings: Settings, embedder: Embedder, address: str = "") -> LocalExecutor:
        if address:
            raise ConfigError("pipeline.executor", f"the local executor takes no address (got {address!r})")
        return cls(embedder, settings.pipeline.workers or settings.cores)

    def close(self) -> None:
        for pool in (self._pool, self._alone):
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._alone = None
        if self._lifeline is not None:  # after the pools: their workers have exited already
            for end in self._lifeline:
                end.close()
            self._lifeline = None


async def _run(pool: ProcessPoolExecutor, call: Callable[[], T]) -> T:
    return await asyncio.get_running_loop().run_in_executor(pool, call)


def exit_with_owner(lifeline: Connection) -> None:
    """Pool initializer, in each worker: exit when the process that owns the pool is gone."""
    _sigio_at_eof(lifeline.fileno())
    threading.Thread(target=_exit_at_eof, args=(lifeline,), name="fanrag-lifeline", daemon=True).start()


def _sigio_at_eof(fd: int) -> None:
    """Have the kernel send this process SIGIO (default action: terminate) when ``fd`` reaches EOF. The
    owner of a signal-driven descriptor is set per open file description, which every worker shares
    for the inherited ``fd``: so open the pipe anew through /proc for a description of this worker's own
    (non-blocking: no wait for a writer, should the owner be gone already)."""
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return  # no /proc: the thread alone watches
    signal.signal(signal.SIGIO, signal.SIG_DFL)
    fcntl.fcntl(own, fcntl.F_SETOWN, os.getpid())
    fcntl.fcntl(own, fcntl.F_SETFL, fcntl.fcntl(own, fcntl.F_GETFL) | os.O_ASYNC)
    # ``own`` stays open for the life of the worker: closing it would end the watch.


def _exit_at_eof(lifeline: Connection) -> None:
    try:
        while True:
            lifeline.recv_bytes()  # nothing is ever sent: this returns only at EOF
    except (EOFError, OSError):
        os._exit(0)  # the owner is gone, and with it whoever wanted this worker's results
