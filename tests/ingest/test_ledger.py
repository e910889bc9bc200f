"""The source ledger: one outcome per source, told once; summary counts and progress events; documents
with nothing to index; parts that fail or never come back. Real stores under the writer; the events are
fed by hand, as the pipeline and the Celery writer feed them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from fanrag.ingest.assemble import Ready
from fanrag.ingest.ledger import NO_TEXT, SourceLedger, SourceState, commit, completed
from fanrag.ingest.sources import PartJob, SourceFile, SourcePlan
from fanrag.ingest.work import PartResult, Piece
from fanrag.ingest.writer import IndexWriter
from fanrag.stores import StoreSet, open_stores

from ..conftest import make_settings
from .test_writer import DIM, piece, plan_of, source_file, vectors


class Outcomes:
    """Records what the ledger tells the source that handed the files over."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str | None]] = []

    def committed(self, source: SourceFile) -> None:
        self.told.append((Path(source.path).name, None))

    def failed(self, source: SourceFile, reason: str) -> None:
        self.told.append((Path(source.path).name, reason))


class Events:
    """Records the progress events."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, int]] = []

    def planned(self, parts: int) -> None:
        self.seen.append(("planned", parts, 0))

    def part_done(self, pages: int, failed: int) -> None:
        self.seen.append(("part_done", pages, failed))

    def committed(self, docs: int, chunks: int) -> None:
        self.seen.append(("committed", docs, chunks))

    def unchanged(self, docs: int) -> None:
        self.seen.append(("unchanged", docs, 0))


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[StoreSet]:
    with open_stores(make_settings(tmp_path / "home"), dim=DIM, model="test-8") as s:
        yield s


def books(stores: StoreSet, events: Events | None = None) -> tuple[IndexWriter, SourceLedger, Outcomes]:
    """A writer, and a ledger that tells a recording source."""
    writer, outcomes = IndexWriter(stores), Outcomes()
    return writer, SourceLedger(writer, outcomes, events), outcomes


def opened(ledger: SourceLedger, src: SourceFile, plan: SourcePlan | None = None) -> SourceState:
    """Accept ``src`` (a first time), and record its plan if given."""
    state = ledger.accept(src)
    assert state is not None
    if plan is not None:
        ledger.planned(state, plan)
    return state


def result(plan: SourcePlan, index: int, pieces: list[Piece], **kw: object) -> PartResult:
    return PartResult(job=PartJob(plan, index, None), pieces=pieces, pages=len(pieces), **kw)  # type: ignore[arg-type]


def feed(writer: IndexWriter, ledger: SourceLedger, res: PartResult) -> list[Ready]:
    """What the embed and write stages do with a part's result (vectors made up)."""
    pieces = ledger.part_done(res)
    return completed(writer, ledger, [(p, vectors(len(p.chunks))) for p in pieces])


def test_a_source_is_told_committed_once_its_last_document_is(tmp_path: Path, stores: StoreSet) -> None:
    events = Events()
    writer, ledger, outcomes = books(stores, events)
    src = source_file(tmp_path / "col.jsonl")
    plan = plan_of(src, parts=2, fmt="jsonl")
    opened(ledger, src, plan)
    first = feed(writer, ledger, result(plan, 0, [piece(plan, 2, entry="e1")]))
    asyncio.run(commit(writer, ledger, first))
    assert outcomes.told == []  # the second part is still out
    second = feed(writer, ledger, result(plan, 1, [piece(plan, 3, entry="e2")], unchanged=["d-same"]))
    asyncio.run(commit(writer, ledger, second))
    asyncio.run(ledger.settle())
    assert outcomes.told == [("col.jsonl", None)]
    s = ledger.summary
    assert (s.sources, s.ok, s.chunks, s.pages, s.unchanged, s.failed) == (1, 2, 5, 2, 1, [])
    assert events.seen == [("planned", 2, 0), ("part_done", 1, 0), ("committed", 1, 2), ("part_done", 1, 0),
                           ("unchanged", 1, 0), ("committed", 1, 3)]
    rec = stores.meta.get_source(src.uri)
    assert rec is not None and (rec.status, rec.n_documents) == ("committed", 3)


def test_the_same_file_twice_is_one_source_and_a_redelivery_after_its_outcome_runs_again(
        tmp_path: Path, stores: StoreSet) -> None:
    _, ledger, _ = books(stores)
    src = source_file(tmp_path / "a.txt")
    state = opened(ledger, src)
    assert ledger.accept(src) is None
    queued = replace(src, token="delivery-1")
    assert ledger.accept(queued) is None  # still open: the same job delivered twice
    asyncio.run(ledger.fail(state, f"{src.path}: not UTF-8"))
    assert ledger.accept(queued) is not None  # its outcome is recorded: a new delivery is new work
    assert ledger.summary.sources == 2


def test_a_failed_source_is_recorded_and_told_with_its_reason(tmp_path: Path, stores: StoreSet) -> None:
    _, ledger, outcomes = books(stores)
    src = source_file(tmp_path / "junk.txt")
    state = opened(ledger, src)
    asyncio.run(ledger.fail(state, f"{src.path}: binary content"))
    asyncio.run(ledger.settle())  # nothing more: told once
    assert ledger.summary.failed == [(src.path, "binary content")]
    assert outcomes.told == [("junk.txt", f"{src.path}: binary content")]
    rec = stores.meta.get_source(src.uri)
    assert rec is not None and rec.status == "failed"


def test_a_document_with_nothing_to_index_fails_alone(tmp_path: Path, stores: StoreSet) -> None:
    writer, ledger, outcomes = books(stores)
    src = source_file(tmp_path / "col.jsonl")
    plan = plan_of(src, fmt="jsonl")
    opened(ledger, src, plan)
    batch = feed(writer, ledger, result(plan, 0, [piece(plan, 2, entry="e1"), piece(plan, 0, entry="scan")]))
    assert [r.doc.uri for r in batch] == [f"{src.uri}#e1"]
    asyncio.run(commit(writer, ledger, batch))
    assert ledger.summary.failed == [(f"{src.uri}#scan", NO_TEXT)] and ledger.summary.ok == 1
    assert outcomes.told == [("col.jsonl", NO_TEXT)]
    rec = stores.meta.get_source(src.uri)
    assert rec is not None and rec.status == "partial"


def test_settle_fails_sources_whose_parts_failed_or_never_came_back(tmp_path: Path, stores: StoreSet) -> None:
    writer, ledger, outcomes = books(stores)
    broken, cut = source_file(tmp_path / "broken.pdf"), source_file(tmp_path / "cut.pdf")
    for src in (broken, cut):
        opened(ledger, src, plan_of(src, parts=2, fmt="pdf"))
    bad = plan_of(broken, parts=2, fmt="pdf")
    feed(writer, ledger, result(bad, 0, [], error=f"{broken.path}: pages 1-2: corrupt xref"))
    half = plan_of(cut, parts=2, fmt="pdf")
    assert feed(writer, ledger, result(half, 0, [piece(half, 2, index=0, n_parts=2)])) == []  # waits for part 1
    asyncio.run(ledger.settle())
    assert sorted(outcomes.told) == [("broken.pdf", f"{broken.path}: pages 1-2: corrupt xref"),
                                     ("cut.pdf", f"{cut.path}: incomplete (a part did not finish)")]
    assert sorted(ledger.summary.failed) == [(broken.path, "pages 1-2: corrupt xref"),
                                             (cut.path, "incomplete (a part did not finish)")]


def test_unchanged_sources_count_their_documents(tmp_path: Path, stores: StoreSet) -> None:
    writer, first, _ = books(stores)
    src = source_file(tmp_path / "a.txt")
    plan = plan_of(src)
    opened(first, src, plan)
    asyncio.run(commit(writer, first, feed(writer, first, result(plan, 0, [piece(plan, 2)]))))
    events = Events()
    _, again, outcomes = books(stores, events)
    asyncio.run(again.unchanged(opened(again, src)))
    assert (again.summary.unchanged, again.summary.unchanged_sources) == (1, 1)
    assert outcomes.told == [("a.txt", None)] and events.seen == [("unchanged", 1, 0)]


def test_missing_paths_are_failures_of_the_run(stores: StoreSet) -> None:
    ledger = SourceLedger(IndexWriter(stores))
    ledger.missing(["nowhere.md"])
    assert ledger.summary.missing_paths == ["nowhere.md"]
    assert ledger.summary.failed == [("nowhere.md", "no such file or directory")]
    assert ledger.summary.exit_code == 1
