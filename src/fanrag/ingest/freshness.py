"""Is the committed version of a source still current? One decision, cheapest check first:

    1. stat   same size and mtime as the committed record   -> SAME_STAT: skipped without reading the file
    2. plan   sniff, hash and size it (a worker's job)      -> UNREADABLE: the plan is a one-line reason
    3. hash   same content hash as the committed record     -> SAME_HASH: skipped; only its stat is new
                                                            -> CHANGED: load it (JSONL: with the committed
                                                               hash of each entry, to skip unchanged ones)

The local pipeline, the Celery ``plan`` task and ``fanrag eval`` (is the corpus already indexed as it is?)
all ask here, so "unchanged" means the same thing everywhere. Only records with status "committed" count:
a failed or partial source is always tried again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from ..ids import source_uri
from ..stores.base import SourceRecord
from .sources import SourceFile, SourcePlan

# Plans a source where the CPU work runs (a process pool, a Ray task, inline in a Celery task).
Planner = Callable[[SourceFile], Awaitable[SourcePlan | str]]


class MetaReader(Protocol):
    """The two reads the decision needs from the metadata store."""

    def get_source(self, uri: str) -> SourceRecord | None: ...

    def document_hashes(self, source: str) -> dict[str, str]: ...


class Verdict(StrEnum):
    SAME_STAT = "same size and mtime"
    SAME_HASH = "same content"
    CHANGED = "changed"
    UNREADABLE = "unreadable"


@dataclass(frozen=True, slots=True)
class Freshness:
    """The decision for one source. ``plan`` is None for SAME_STAT (never planned) and the one-line
    reason for UNREADABLE; ``known`` maps a JSONL source's committed entries to their hashes."""

    verdict: Verdict
    record: SourceRecord | None
    plan: SourcePlan | str | None = None
    known: dict[str, str] = field(default_factory=dict)

    @property
    def current(self) -> bool:
        """The committed version is this one: nothing to load."""
        return self.verdict in (Verdict.SAME_STAT, Verdict.SAME_HASH)


async def decide(src: SourceFile, meta: MetaReader | None, plan: Planner) -> Freshness:
    """Skip on stat, else plan, then skip on hash. ``meta`` is None where nothing is committed yet.
    Store reads leave the event loop: a server store's round trip must not stall the caller's stages."""
    record = await asyncio.to_thread(meta.get_source, src.uri) if meta is not None else None
    if unchanged_by_stat(record, src):
        return Freshness(Verdict.SAME_STAT, record)
    planned = await plan(src)
    if isinstance(planned, str):
        return Freshness(Verdict.UNREADABLE, record, planned)
    if unchanged_by_hash(record, planned):
        return Freshness(Verdict.SAME_HASH, record, planned)
    known = await asyncio.to_thread(meta.document_hashes, src.uri) if meta and planned.format == "jsonl" else {}
    return Freshness(Verdict.CHANGED, record, planned, known)


def is_current(meta: MetaReader, path: str | os.PathLike[str]) -> bool:
    """The index committed the file at ``path`` and it has not changed since, by the stat check alone
    (no reading): e.g. evaluation can then open the index read-only instead of ingesting."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    src = SourceFile(path=os.fspath(path), uri=source_uri(os.fspath(path)), size=st.st_size, mtime=st.st_mtime)
    return unchanged_by_stat(meta.get_source(src.uri), src)


def unchanged_by_stat(rec: SourceRecord | None, src: SourceFile) -> bool:
    """Same size and mtime as the committed record: skip without even hashing (like make/rsync). An empty
    file never matches: it is reported (as empty) each time."""
    return bool(rec and rec.status == "committed" and rec.size == src.size and rec.mtime == src.mtime
                and src.size > 0)


def unchanged_by_hash(rec: SourceRecord | None, plan: SourcePlan) -> bool:
    """Same content as the committed version (only the mtime changed)."""
    return bool(rec and rec.status == "committed" and rec.content_hash == plan.content_hash)
