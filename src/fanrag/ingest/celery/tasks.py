"""The ingestion tasks. One source's chain is ``plan | load_chunk | embed | write``; ``finalise`` is the chord
callback of a run. The first three run on the work queue (any number of processes); ``write`` and
``finalise`` on the write queue, served by one process that keeps the index home's stores open.

Every step returns its source's ``DocWork``; a step that fails records a one-line reason naming the file
and later steps pass it on, so the writer records the failure like a local run does and the chord still
fires. A delivery counter per task id turns a task that keeps killing its worker (a poison file and
``task_reject_on_worker_lost``) into such a failure instead of an endless redelivery.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from celery import Task, shared_task  # type: ignore[import-untyped]
from celery.signals import worker_process_shutdown, worker_shutdown  # type: ignore[import-untyped]

from ...embed import create_embedder
from ...embed.base import Embedder
from ...embed.cache import EmbedCache, identity
from ...errors import IndexLocked, StoreError
from ...settings import EmbedSettings, Settings
from ...stores import MetaStore, StoreSet, open_reader, open_stores
from ...types import Page
from ..assemble import split_rows
from ..freshness import decide
from ..ledger import SourceLedger, commit, completed
from ..sources import PartJob, SourceFile, SourcePlan
from ..summary import IngestSummary
from ..work import PartResult, WorkConfig, plan_source, process_part, work_config
from ..writer import IndexWriter
from .app import EMBED, FINALISE, LOAD_CHUNK, PLAN, WRITE
from .messages import KEY_TTL_S, DocWork, RunInfo, finalised_key
from .records import merge, summary_from_dict

log = logging.getLogger(__name__)

MAX_OPEN_HOMES = 4  # index homes a writer keeps open at once


# ---------------------------------------------------------------------- tasks


@shared_task(name=PLAN, bind=True, ignore_result=True)
def plan(self: Task, src: SourceFile, run: RunInfo) -> DocWork:
    return _step(self, DocWork(run, src), "planning", _plan)


@shared_task(name=LOAD_CHUNK, bind=True, ignore_result=True)
def load_chunk(self: Task, work: DocWork) -> DocWork:
    return _step(self, work, "load/chunk", _load_chunk)


@shared_task(name=EMBED, bind=True, ignore_result=True)
def embed(self: Task, work: DocWork) -> DocWork:
    return _step(self, work, "embedding", _embed)


@shared_task(name=WRITE, bind=True, max_retries=60)
def write(self: Task, work: DocWork) -> dict[str, Any]:
    """Assemble, write and commit one source's documents (delete + write + commit: a redelivery rewrites
    the same chunks). Returns the source's summary as JSON."""
    if (n := _deliveries(self)) > _max_attempts(self):
        _delivered(self)
        return _failure(work, f"write: its worker died {n - 1} times on it").to_dict()
    try:
        with _WRITE_LOCK:
            summary = asyncio.run(_commit(_writer(work.run.settings), work))
    except IndexLocked as exc:  # another writer process (concurrency > 1?) holds the home: wait for it
        log.warning("%s; the write queue needs exactly one worker process (--concurrency 1)", exc)
        if self.request.retries >= self.max_retries:  # a failure record, so the chord still fires
            _delivered(self)
            return _failure(work, f"write: the index stayed locked by another process: {exc}").to_dict()
        raise self.retry(exc=exc, countdown=2) from exc
    except Exception as exc:  # stores that cannot open, an outage beyond the pipeline's retries, a bug
        log.exception("fanrag: writing %s failed", work.src.path)
        _close_writer(work.run.settings)  # reopen (and recover) the stores for the next task
        summary = _failure(work, f"write failed: {type(exc).__name__}: {exc}")
    _delivered(self)
    return summary.to_dict()


@shared_task(name=FINALISE, bind=True, max_retries=60)
def finalise(self: Task, records: Sequence[dict[str, Any]], run: RunInfo) -> dict[str, Any]:
    """The chord callback: once every source is recorded, prune if asked, checkpoint the stores, sum up."""
    summary = merge(summary_from_dict(r) for r in records)
    with _WRITE_LOCK:  # _writer's cache of open stores is shared with write() (a threads pool)
        try:
            stores = _writer(run.settings)
        except IndexLocked as exc:
            raise self.retry(exc=exc, countdown=2) from exc
        summary.removed += asyncio.run(IndexWriter(stores).finish_run(prune=run.prune))
    client = _redis(self)
    if client is not None:
        key = finalised_key(run.run_id)
        client.pipeline().incr(key).expire(key, KEY_TTL_S).execute()
    return summary.to_dict()


# ---------------------------------------------------------------------- steps


def _step(task: Task, work: DocWork, stage: str, fn: Callable[[DocWork], None]) -> DocWork:
    if work.done:
        return work  # failed or unchanged: the writer records it
    if (n := _deliveries(task)) > _max_attempts(task):
        work.fail(f"{stage}: its worker died {n - 1} times on this file")
    else:
        try:
            fn(work)
        except Exception as exc:  # an unexpected error in one file must not stop the run (or the chord)
            log.exception("fanrag: %s failed for %s", stage, work.src.path)
            work.fail(f"{stage} failed: {type(exc).__name__}: {exc}")
    _delivered(task)
    return work


def _plan(work: DocWork) -> None:
    settings = work.run.settings

    async def plan(src: SourceFile) -> SourcePlan | str:
        t = time.perf_counter()
        try:
            return plan_source(src, _work_config(settings))
        finally:
            work.plan_s = time.perf_counter() - t

    fresh = asyncio.run(decide(work.src, _meta_reader(settings), plan))
    work.plan, work.unchanged, work.known = fresh.plan, fresh.current, fresh.known


def _load_chunk(work: DocWork) -> None:
    assert isinstance(work.plan, SourcePlan)
    cfg = _work_config(work.run.settings)
    for i, part in enumerate(work.plan.parts):
        work.results.append(_slim(process_part(PartJob(work.plan, i, part, work.known), cfg)))


def _slim(result: PartResult) -> PartResult:
    """Drop what the writer does not need from the message: the committed hashes, and the text of
    documents in one piece (their chunks carry it; split documents keep theirs for the merge)."""
    job = result.job
    result.job = PartJob(job.plan, job.index, job.part)
    for piece in result.pieces:
        if piece.n_parts == 1:
            doc = piece.doc
            piece.doc = replace(doc, text="", pages=tuple(Page(p.number, "", p.offset) for p in doc.pages))
    return result


def _embed(work: DocWork) -> None:
    embedder = _embedder(work.run.settings.embed)
    sizes = [sum(len(p.chunks) for p in r.pieces) for r in work.results]
    texts = [c.indexed_text for r in work.results for p in r.pieces for c in p.chunks]
    t = time.perf_counter()
    vectors = _vectors(work.run.settings, embedder, texts) if texts else np.zeros((0, embedder.dim), np.float32)
    work.embed_s = time.perf_counter() - t
    work.vectors = split_rows(vectors, sizes)


def _vectors(settings: Settings, embedder: Embedder, texts: list[str]) -> np.ndarray:
    """Through the index's embedding cache when it is on (and the index exists): only misses are embedded."""
    meta = _meta_reader(settings) if settings.embed.cache else None
    if meta is None:
        return embedder.embed(texts)
    cache = EmbedCache(meta, identity(embedder, settings.embed.max_length), embedder.dim)
    return asyncio.run(cache.embed(texts, lambda batch: asyncio.to_thread(embedder.embed, batch)))


def _writer_cache(settings: Settings, stores: StoreSet) -> EmbedCache | None:
    """The writer's side of the cache: it did not see what its workers embedded, so it offers every entry."""
    if not settings.embed.cache:
        return None
    embedder = _embedder(settings.embed)
    return EmbedCache(stores.meta, identity(embedder, settings.embed.max_length), embedder.dim, store_all=True)


async def _commit(stores: StoreSet, work: DocWork) -> IngestSummary:
    """Record one source whose plan, load/chunk and embedding ran in its chain: the same assembly, writes,
    commit and outcome as a local run. No outcomes to tell: Celery acknowledges the chain (acks_late)."""
    writer = IndexWriter(stores, cache=_writer_cache(work.run.settings, stores))
    ledger = SourceLedger(writer)
    state = ledger.accept(work.src)
    assert state is not None  # a new ledger: nothing is open in it yet
    st = ledger.summary.stages
    st.plan, st.load_chunk, st.embed = work.plan_s, sum((r.seconds for r in work.results), 0.0), work.embed_s
    if work.unchanged or work.plan is None:
        await ledger.unchanged(state, touch=work.plan is not None)
    elif isinstance(work.plan, str):
        await ledger.fail(state, work.plan)
    else:
        ledger.planned(state, work.plan)
        batch = []
        for result, vectors in zip(work.results, work.vectors, strict=True):
            pieces = ledger.part_done(result)
            batch += completed(writer, ledger, zip(pieces, split_rows(vectors, (len(p.chunks) for p in pieces))))
        await commit(writer, ledger, batch)
        await ledger.settle()
    return ledger.summary


def _failure(work: DocWork, reason: str) -> IngestSummary:
    """A source the writer could not record in the stores: it still counts in the run's summary."""
    s = IngestSummary(sources=1)
    s.failed.append((work.src.path, reason))
    return s


# ---------------------------------------------------------------------- per-process state


_EMBEDDERS: dict[EmbedSettings, Embedder] = {}
_READERS: dict[tuple[str, str], MetaStore] = {}
_WRITERS: OrderedDict[str, tuple[Settings, StoreSet]] = OrderedDict()
_WRITE_LOCK = threading.Lock()  # one write at a time, even in a worker started with --pool threads


def _embedder(settings: EmbedSettings) -> Embedder:
    if settings not in _EMBEDDERS:
        _EMBEDDERS[settings] = create_embedder(settings)
    return _EMBEDDERS[settings]


def _work_config(settings: Settings) -> WorkConfig:
    return work_config(settings, _embedder(settings.embed))


def _meta_reader(settings: Settings) -> MetaStore | None:
    """The metadata store, read-only, to skip unchanged sources; None before anything was committed."""
    key = (str(settings.home), settings.stores.meta)
    if key not in _READERS:
        try:
            _READERS[key] = open_reader(settings, "meta")
        except StoreError as exc:  # no index yet (or not reachable): plan everything; the writer decides
            log.info("fanrag: no committed sources to compare with (%s)", exc)
            return None
    return _READERS[key]


def _writer(settings: Settings) -> StoreSet:
    """The index home's stores, opened for writing once per process and kept open between tasks."""
    key = str(settings.home)
    if key in _WRITERS and _stores_of(_WRITERS[key][0]) != _stores_of(settings):
        _close_writer(settings)
    if key not in _WRITERS:
        embedder = _embedder(settings.embed)  # the index records its dim and model
        _WRITERS[key] = (settings, open_stores(settings, mode="write", dim=embedder.dim, model=embedder.name))
        while len(_WRITERS) > MAX_OPEN_HOMES:
            _WRITERS.popitem(last=False)[1][1].close()
    _WRITERS.move_to_end(key)
    return _WRITERS[key][1]


def _stores_of(settings: Settings) -> tuple[Any, ...]:
    """What the open stores depend on (a run with other chunking settings reuses them)."""
    return settings.stores, settings.hnsw, settings.embed


def _close_writer(settings: Settings) -> None:
    entry = _WRITERS.pop(str(settings.home), None)
    if entry is not None:
        try:
            entry[1].close()
        except Exception:  # closing after a failure: the next open recovers from the logs
            log.exception("fanrag: closing the stores of %s failed", settings.home)


@worker_shutdown.connect
@worker_process_shutdown.connect
def _close_all(**_: Any) -> None:
    """Checkpoint and unlock every open home when the worker stops (a kill -9 leaves that to the logs)."""
    while _WRITERS:
        _WRITERS.popitem()[1][1].close()
    for store in _READERS.values():
        store.close()
    _READERS.clear()


def _redis(task: Task) -> Any:
    return getattr(task.app.backend, "client", None)  # the Redis result backend's client


def _deliveries(task: Task) -> int:
    """How many times this task has been delivered (redeliveries after a worker died included)."""
    client = _redis(task)
    if client is None or not task.request.id:
        return 1
    key = f"fanrag:celery:deliveries:{task.request.id}"
    count, _ = client.pipeline().incr(key).expire(key, KEY_TTL_S).execute()
    return int(count) - int(task.request.retries or 0)


def _delivered(task: Task) -> None:
    """The task ran to its end: forget its delivery count (only crashed tasks leave one behind)."""
    client = _redis(task)
    if client is not None and task.request.id:
        client.delete(f"fanrag:celery:deliveries:{task.request.id}")


def _max_attempts(task: Task) -> int:
    return int(task.app.conf.get("fanrag_max_attempts", 5))
