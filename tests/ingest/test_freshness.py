"""The freshness decision: skip on stat, plan, skip on hash; against a real metadata store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanrag.ingest.freshness import Freshness, Verdict, decide, is_current
from fanrag.ingest.sources import SourceFile, SourcePlan
from fanrag.ingest.writer import IndexWriter
from fanrag.stores import StoreSet, open_stores

from ..conftest import make_settings
from .test_writer import DIM, piece, plan_of, ready, source_file


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[StoreSet]:
    with open_stores(make_settings(tmp_path / "home"), dim=DIM, model="test-8") as s:
        yield s


def commit_source(stores: StoreSet, src: SourceFile, digest: str = "h1", entries: tuple[str, ...] = ()) -> None:
    """A source as a run leaves it: its documents and a committed record (size, mtime, content hash)."""
    writer = IndexWriter(stores)
    plan = plan_of(src, digest=digest)
    batch = [ready(piece(plan, 1, entry=e)) for e in entries or ("",)]
    asyncio.run(writer.write(batch))
    asyncio.run(writer.record_done(src, digest, [], {r.doc.doc_id for r in batch}))


class Planner:
    """Plans like a worker would, recording which sources it was asked to read."""

    def __init__(self, result: SourcePlan | str | None = None, digest: str = "h1", fmt: str = "text") -> None:
        self.asked: list[str] = []
        self._result, self._digest, self._fmt = result, digest, fmt

    async def __call__(self, src: SourceFile) -> SourcePlan | str:
        self.asked.append(Path(src.path).name)
        return self._result if self._result is not None else plan_of(src, digest=self._digest, fmt=self._fmt)


def run(src: SourceFile, stores: StoreSet | None, planner: Planner) -> Freshness:
    return asyncio.run(decide(src, stores.meta if stores else None, planner))


def test_a_new_source_is_planned_and_changed(tmp_path: Path, stores: StoreSet) -> None:
    planner = Planner()
    fresh = run(source_file(tmp_path / "a.txt"), stores, planner)
    assert (fresh.verdict, fresh.current, fresh.record, fresh.known) == (Verdict.CHANGED, False, None, {})
    assert isinstance(fresh.plan, SourcePlan) and planner.asked == ["a.txt"]


def test_same_size_and_mtime_skips_without_planning(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "a.txt")
    commit_source(stores, src)
    planner = Planner()
    fresh = run(src, stores, planner)
    assert (fresh.verdict, fresh.current, fresh.plan, planner.asked) == (Verdict.SAME_STAT, True, None, [])


def test_a_new_mtime_with_the_same_content_is_current(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "a.txt")
    commit_source(stores, src, digest="h1")
    touched = SourceFile(src.path, src.uri, src.size, src.mtime + 5)
    fresh = run(touched, stores, Planner(digest="h1"))
    assert (fresh.verdict, fresh.current) == (Verdict.SAME_HASH, True)
    fresh = run(touched, stores, Planner(digest="h2"))
    assert (fresh.verdict, fresh.current) == (Verdict.CHANGED, False)


def test_a_changed_collection_comes_with_its_committed_entries(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "col.jsonl")
    commit_source(stores, src, entries=("e1", "e2"))
    fresh = run(SourceFile(src.path, src.uri, src.size + 1, src.mtime), stores, Planner(digest="h2", fmt="jsonl"))
    assert fresh.verdict is Verdict.CHANGED and set(fresh.known) == set(stores.meta.document_hashes(src.uri))
    assert len(fresh.known) == 2


def test_an_unreadable_source_carries_its_reason(tmp_path: Path) -> None:
    src = source_file(tmp_path / "a.txt")
    fresh = run(src, None, Planner(result=f"{src.path}: cannot read (Permission denied)"))
    assert (fresh.verdict, fresh.current, fresh.plan) == (
        Verdict.UNREADABLE, False, f"{src.path}: cannot read (Permission denied)")


def test_only_committed_records_and_non_empty_files_are_skipped(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "a.txt")
    commit_source(stores, src)
    asyncio.run(IndexWriter(stores).record_failed(src, f"{src.path}: boom"))  # same stat, but it failed
    assert run(src, stores, Planner()).verdict is Verdict.CHANGED
    empty = source_file(tmp_path / "empty.txt", "")
    commit_source(stores, empty)
    planner = Planner()
    assert run(empty, stores, planner).verdict is not Verdict.SAME_STAT and planner.asked == ["empty.txt"]


def test_is_current_by_stat_alone(tmp_path: Path, stores: StoreSet) -> None:
    src = source_file(tmp_path / "corpus.jsonl")
    assert not is_current(stores.meta, src.path)
    commit_source(stores, src)
    assert is_current(stores.meta, src.path) and is_current(stores.meta, Path(src.path))
    os.utime(src.path, (src.mtime + 5, src.mtime + 5))
    assert not is_current(stores.meta, src.path)
    assert not is_current(stores.meta, tmp_path / "missing.jsonl")
